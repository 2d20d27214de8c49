// TLS for amqps:// nodes over rabbitmq-c's OpenSSL socket: the socket's set-up from
// amqp.tls, errors that name what failed, and the decrypted input OpenSSL holds.
//
// rabbitmq-c 0.11 exposes the socket's SSL_CTX (amqp_ssl_socket_get_context) but not
// its SSL. Everything here hangs off that context: the verification (chain against
// the CAs, and the host name or IP address checked by OpenSSL during the handshake:
// rabbitmq-c's own check matches no IP address), a verify callback that keeps the
// first failure for the error line, and an info callback that notes the SSL once
// the handshake starts, so SSL_pending() can be asked. The state lives in the
// context's ex_data and is freed with it; the SSL's own ex_data clears the note when
// OpenSSL frees that SSL (rabbitmq-c does on close), so it never dangles.
#pragma once

#include <amqp.h>

#include <string>

#include "eventd/config.hpp"

namespace eventd {

// A TLS socket on `conn` (which owns it), set up from `tls` to verify `host`; not
// yet open. Throws AmqpError with one line (e.g. an unreadable key).
amqp_socket_t* new_tls_socket(amqp_connection_state_t conn, const AmqpTlsConfig& tls, const std::string& host);

// Why amqp_socket_open on that socket failed with `status`, in one line, e.g.
// "certificate verify failed: self-signed certificate (CN=localhost)" or "TLS
// handshake failed: wrong version number". Call on the thread that opened it.
std::string tls_open_error(amqp_socket_t* socket, int status);

// The last OpenSSL error of this thread, e.g. "tlsv13 alert certificate required"
// (empty when there is none): what an AMQP_STATUS_SSL_ERROR was.
std::string tls_last_error();

// Bytes OpenSSL has decrypted and not yet handed to rabbitmq-c (SSL_pending): input
// the socket will not signal again. 0 when the socket is closed. `socket` must be a
// TLS socket from new_tls_socket.
int tls_pending(amqp_socket_t* socket);

}  // namespace eventd
