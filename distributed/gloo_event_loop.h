#pragma once
/// Gloo's TCP event loop at idle priority. Gloo's loop thread (one per device) busy-spins while a
/// worker thread holds the pair it has events for (gloo/transport/tcp/pair.cc, handleEvents'
/// try_to_lock; pytorch/gloo#246). Where there is no core to spare, that spin takes a whole
/// scheduler slice (about 4 ms here) from the worker that would finish the collective, or from
/// training. At idle priority (SCHED_IDLE) the loop thread still runs whenever a core has nothing
/// else to do, which is when its rank waits for a collective.

#include <functional>

namespace trainbus::distributed {

/// Runs `create_device`, which starts Gloo's event loop thread, then puts the one thread it
/// started in SCHED_IDLE. Leaves every thread as it is when it started none or more than one
/// (then it cannot tell which is the loop), or where the system refuses: the collectives then
/// work as before, only slower on a machine without a core to spare. Returns whether it did.
bool create_gloo_device_with_idle_loop(const std::function<void()>& create_device);

}  // namespace trainbus::distributed
