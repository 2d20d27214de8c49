// eventctl: the operator CLI's entry point; the commands live in the library.
#include "eventd/eventctl.hpp"

int main(int argc, char** argv) { return eventd::eventctl_main(argc, argv); }
