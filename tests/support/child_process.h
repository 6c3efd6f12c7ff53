#pragma once
// Fault tests that must not run in the test process itself (a SIGKILL, a lowered file-size limit, a
// private mount namespace, a dropped root privilege) run this test binary again as a child that
// runs only one hidden test case. The child learns its work directory from an environment variable.

#include <sys/types.h>

#include <string>

namespace trainbus::testing {

/// The variable that holds a child's work directory; empty or unset in a normal test run.
constexpr const char* kChildDirVariable = "TRAINBUS_TEST_CHILD_DIR";

/// Starts this test binary with only the test cases tagged `tag` (a hidden tag such as
/// "[.crash-child]") and kChildDirVariable=`dir`. Its output goes to ours.
pid_t spawn_test_child(const std::string& tag, const std::string& dir);

/// Waits for the child and returns its wait status.
int wait_for_child(pid_t child);

/// Runs the child to its end; true if it exited with 0 (all its assertions passed).
bool run_test_child(const std::string& tag, const std::string& dir);

/// The work directory when this process is such a child, else empty.
std::string test_child_dir();

}  // namespace trainbus::testing
