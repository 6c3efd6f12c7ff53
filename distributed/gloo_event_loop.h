#pragma once
/// Gloo's TCP event loop at a low priority. Gloo's loop thread (one per device) busy-spins while a
/// worker thread holds the pair it has events for (gloo/transport/tcp/pair.cc, handleEvents'
/// try_to_lock; pytorch/gloo#246). Where there is no core to spare, that spin can hold a core for
/// a whole scheduler slice (about 4 ms here) while the worker that would finish the collective,
/// or training, waits for it. Niced, the loop gives way to both, and still gets its share where
/// every core is busy (SCHED_IDLE, tried first, stalled collectives for tens of ms then).

#include <functional>

namespace trainbus::distributed {

/// Runs `create_device`, which starts Gloo's event loop thread, then gives the one thread it
/// started the nice value `nice` (1 to 19; 0 changes nothing), or keeps its own where that is
/// higher (a lower priority). Leaves every thread as it is when
/// it started none or more than one (it cannot tell which is the loop then), or where the system
/// refuses: the collectives then work as PyTorch's do, only slower on a machine without a core
/// to spare. Returns whether it reniced the loop.
bool create_gloo_device_with_niced_loop(const std::function<void()>& create_device, int nice);

}  // namespace trainbus::distributed
