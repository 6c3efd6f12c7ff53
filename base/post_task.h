#pragma once
/// post_task: boost::asio::post, with failures that tests can inject. Posting allocates, so it can
/// throw std::bad_alloc; every caller must leave its state as if it had not tried (no flag left
/// set that a later wait would wait on for ever), and the tests check that through this seam.

#include <new>
#include <utility>

#include <boost/asio/post.hpp>

namespace trainbus::detail {

/// Makes `count` calls of post_task throw std::bad_alloc, after the next `after` calls succeed
/// (for tests of rollback paths; set it while the threads that post are quiet).
void inject_post_failures(int count, int after = 0) noexcept;
/// Consumes one injected failure; false (one relaxed load) when none is set.
bool take_injected_post_failure() noexcept;

/// boost::asio::post(target, handler) for an executor or an execution context (a thread_pool), or
/// std::bad_alloc if a failure was injected.
template <class Target, class Handler>
void post_task(Target&& target, Handler&& handler) {
  if (take_injected_post_failure()) throw std::bad_alloc();
  boost::asio::post(std::forward<Target>(target), std::forward<Handler>(handler));
}

}  // namespace trainbus::detail
