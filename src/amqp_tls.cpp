// TLS sockets for amqps:// (see amqp_tls.hpp for what hangs off the SSL_CTX).
#include "eventd/amqp_tls.hpp"

#include <amqp_ssl_socket.h>
#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "eventd/amqp_session.hpp"

namespace eventd {
namespace {

// One per SSL_CTX, that is one per rabbitmq-c TLS socket; owned by the context.
struct TlsState {
  std::string host;          // what the certificate must name
  std::string verify_error;  // the first failure the verify callback saw
  int verify_code = 0;
  std::string subject;  // of the certificate that failed
  std::string issuer;
  const SSL* ssl = nullptr;  // the socket's SSL while OpenSSL has it
};

void free_state(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<TlsState*>(ptr); }

void forget_ssl(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  if (ptr != nullptr) static_cast<TlsState*>(ptr)->ssl = nullptr;
}

int ctx_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_state);
  return index;
}

int ssl_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, forget_ssl);
  return index;
}

TlsState* state_of(SSL_CTX* ctx) {
  return ctx == nullptr ? nullptr : static_cast<TlsState*>(SSL_CTX_get_ex_data(ctx, ctx_index()));
}

TlsState* state_of(amqp_socket_t* socket) {
  return state_of(static_cast<SSL_CTX*>(amqp_ssl_socket_get_context(socket)));
}

std::string name_text(const X509_NAME* name) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return "?";
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

// Keeps the first failure for the error line; the verdict stays OpenSSL's.
int on_verify(int ok, X509_STORE_CTX* store) {
  if (ok != 0) return ok;
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  TlsState* state = ssl != nullptr ? state_of(SSL_get_SSL_CTX(ssl)) : nullptr;
  if (state != nullptr && state->verify_error.empty()) {
    state->verify_code = X509_STORE_CTX_get_error(store);
    state->verify_error = X509_verify_cert_error_string(state->verify_code);
    if (X509* cert = X509_STORE_CTX_get_current_cert(store)) {
      state->subject = name_text(X509_get_subject_name(cert));
      state->issuer = name_text(X509_get_issuer_name(cert));
    }
  }
  return ok;
}

// The socket's SSL, noted when its handshake starts (rabbitmq-c creates it in open).
void on_info(const SSL* ssl, int where, int) {
  if ((where & SSL_CB_HANDSHAKE_START) == 0) return;
  TlsState* state = state_of(SSL_get_SSL_CTX(ssl));
  if (state == nullptr || state->ssl == ssl) return;
  // ex_data is not part of the connection's state OpenSSL reads: setting it on a
  // const SSL from its own callback is safe.
  if (SSL_set_ex_data(const_cast<SSL*>(ssl), ssl_index(), state) == 1) state->ssl = ssl;
}

bool is_ip_address(const std::string& host) {
  in_addr v4{};
  in6_addr v6{};
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 || inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

[[noreturn]] void fail(const std::string& what) {
  const std::string why = tls_last_error();
  throw AmqpError(what + (why.empty() ? "" : ": " + why));
}

}  // namespace

std::string tls_last_error() {
  unsigned long last = 0;
  while (unsigned long e = ERR_get_error()) last = e;  // the queue is this thread's; empty it
  if (last == 0) return {};
  if (const char* reason = ERR_reason_error_string(last)) return reason;
  char text[256];
  ERR_error_string_n(last, text, sizeof text);
  return text;
}

amqp_socket_t* new_tls_socket(amqp_connection_state_t conn, const AmqpTlsConfig& tls, const std::string& host) {
  ERR_clear_error();
  amqp_socket_t* socket = amqp_ssl_socket_new(conn);
  if (socket == nullptr) fail("cannot create a TLS socket");
  auto* ctx = static_cast<SSL_CTX*>(amqp_ssl_socket_get_context(socket));
  auto state = std::make_unique<TlsState>();
  state->host = host;
  if (ctx == nullptr || SSL_CTX_set_ex_data(ctx, ctx_index(), state.get()) != 1) fail("cannot set up TLS");
  (void)state.release();  // the context's now: free_state deletes it
  SSL_CTX_set_info_callback(ctx, on_info);

  // rabbitmq-c checks the host name after the handshake with X509_check_host, which
  // never matches an IP address: OpenSSL checks it during the handshake instead.
  amqp_ssl_socket_set_verify_hostname(socket, 0);
  if (tls.verify_peer) {
    if (!tls.ca_file.empty()) {
      if (amqp_ssl_socket_set_cacert(socket, tls.ca_file.c_str()) != AMQP_STATUS_OK)
        fail("cannot load the CA certificates of amqp.tls.caFile " + tls.ca_file);
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      fail("cannot load the system's CA certificates");
    }
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int rc = is_ip_address(host) ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                                       : X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
    if (rc != 1) fail("cannot check the broker's certificate against host " + host);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_verify);
  } else {
    amqp_ssl_socket_set_verify_peer(socket, 0);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!tls.cert_file.empty() &&
      amqp_ssl_socket_set_key(socket, tls.cert_file.c_str(), tls.key_file.c_str()) != AMQP_STATUS_OK) {
    fail("cannot load the client certificate " + tls.cert_file + " with key " + tls.key_file);
  }
  return socket;
}

std::string tls_open_error(amqp_socket_t* socket, int status) {
  const TlsState* state = state_of(socket);
  if (state != nullptr && !state->verify_error.empty()) {
    tls_last_error();  // the handshake's own entry says no more than the callback saw
    std::string line = "certificate verify failed: " + state->verify_error;
    if (state->verify_code == X509_V_ERR_HOSTNAME_MISMATCH || state->verify_code == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      line += " (the certificate " + state->subject + " is not for \"" + state->host + "\")";
    } else if (!state->subject.empty()) {
      line += " (" + state->subject + ", issued by " + state->issuer + ")";
    }
    return line;
  }
  switch (status) {
    case AMQP_STATUS_SSL_CONNECTION_FAILED:
    case AMQP_STATUS_SSL_ERROR: {
      const std::string why = tls_last_error();
      return "TLS handshake failed" + (why.empty() ? std::string() : ": " + why);
    }
    case AMQP_STATUS_SSL_PEER_VERIFY_FAILED: return "certificate verify failed: the broker sent no certificate";
    case AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED: return "certificate verify failed: hostname mismatch";
    default: return amqp_error_string2(status);
  }
}

int tls_pending(amqp_socket_t* socket) {
  const TlsState* state = socket != nullptr ? state_of(socket) : nullptr;
  return state != nullptr && state->ssl != nullptr ? SSL_pending(state->ssl) : 0;
}

}  // namespace eventd
