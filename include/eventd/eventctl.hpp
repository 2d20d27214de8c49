// eventctl's commands, in the library so tests can drive them.
#pragma once

namespace eventd {

// Runs eventctl with `argv` (argv[0] is the program name); returns the exit code:
// 0 done, 1 the broker refused or could not be reached, 2 bad usage or input.
int eventctl_main(int argc, char** argv);

}  // namespace eventd
