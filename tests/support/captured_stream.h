#pragma once
// CapturedStream: what a std::ostream (std::cout, std::cerr) receives while it lives, for tests
// of what a run prints by default.

#include <ostream>
#include <sstream>
#include <string>

namespace trainbus::testing {

/// Redirects `stream` into a string until destroyed. Every run drains its observers before it
/// returns, so nothing writes to the stream after the run.
class CapturedStream {
 public:
  explicit CapturedStream(std::ostream& stream)
      : stream_(stream), previous_(stream.rdbuf(text_.rdbuf())) {}
  ~CapturedStream() { stream_.rdbuf(previous_); }
  CapturedStream(const CapturedStream&) = delete;
  CapturedStream& operator=(const CapturedStream&) = delete;
  std::string text() const { return text_.str(); }

 private:
  std::ostream& stream_;
  std::ostringstream text_;
  std::streambuf* previous_;
};

}  // namespace trainbus::testing
