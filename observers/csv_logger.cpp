#include "observers/csv_logger.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

#include "base/errors.h"
#include "observers/hparams_file.h"

namespace trainbus::observers {
namespace {

namespace fs = std::filesystem;

std::string format_number(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);  // shortest round trip
  return std::string(buffer, result.ptr);
}

std::string quote(const std::string& field) {
  if (field.find_first_of(",\"\r\n") == std::string::npos) return field;
  std::string quoted = "\"";
  for (char c : field) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + '"';
}

std::vector<std::string> parse_line(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        fields.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        fields.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else {
      fields.back() += c;
    }
  }
  return fields;
}

std::string join(const std::vector<std::string>& columns,
                 const std::map<std::string, std::string>& row) {
  std::string line;
  for (size_t i = 0; i < columns.size(); ++i) {
    if (i) line += ',';
    const auto found = row.find(columns[i]);
    if (found != row.end()) line += quote(found->second);
  }
  return line;
}

std::string header(const std::vector<std::string>& columns) {
  std::string line;
  for (size_t i = 0; i < columns.size(); ++i) line += (i ? "," : "") + quote(columns[i]);
  return line;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": cannot " + what + " (" + std::strerror(errno) + ")");
}

}  // namespace

CsvLogger::CsvLogger(CsvLoggerOptions options)
    : Logger(options.log_every_n_steps()), options_(std::move(options)) {
  if (options_.log_dir().empty())
    throw std::invalid_argument("CsvLogger: log_dir is empty; name the run directory");
  if (options_.flush_logs_every_n_steps() < 1) {
    throw std::invalid_argument("CsvLogger: flush_logs_every_n_steps must be >= 1");
  }
  // Rank 0's files, created at the first write or when attached (open_files_in): a rank that
  // does not run the logger creates nothing, not even the directory.
  dir_ = options_.log_dir();
  metrics_file_ = (fs::path(dir_) / "metrics.csv").string();
  hparams_file_ = (fs::path(dir_) / "hparams.yaml").string();
}

void CsvLogger::use_dir(const std::string& dir) {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error)
    throw std::runtime_error(dir + ": cannot create the run directory (" + error.message() + ")");
  const std::string metrics_file = (fs::path(dir) / "metrics.csv").string();
  std::vector<std::string> columns;
  if (fs::exists(metrics_file)) {
    // Continue an existing file (a resumed run logging into the same directory).
    std::ifstream in(metrics_file);
    std::string line;
    if (std::getline(in, line) && !line.empty()) columns = parse_line(line);
  }
  dir_ = dir;
  metrics_file_ = metrics_file;
  // Each rank's directory keeps an hparams.yaml too: it is a whole log directory in Lightning's
  // layout, and hyper-parameters a callback logs on one rank (LoggerHandle::log_hyperparams) may
  // differ from rank 0's. Sharing rank 0's file would let the last rank to write win.
  hparams_file_ = (fs::path(dir) / "hparams.yaml").string();
  columns_ = std::move(columns);
  dir_ready_ = true;
}

void CsvLogger::open_files_in(const std::string& dir) {
  // Written to before it was attached (its hooks called directly): rank 0's files, kept.
  TRAINBUS_CHECK(!dir_ready_ || dir == dir_, name(), " wrote ", dir_,
                 " before it was attached on a rank whose files go to ", dir,
                 ": attach it before giving it events, or make a logger for each rank");
  if (!dir_ready_) use_dir(dir);
}

void CsvLogger::log_metrics(const Metrics& metrics, int64_t step, int64_t epoch) {
  Row row;
  for (const auto& [name, value] : metrics) row[name] = format_number(value);
  row["epoch"] = epoch >= 0 ? std::to_string(epoch) : std::string();
  row["step"] = std::to_string(step);
  pending_.push_back(std::move(row));
  if (static_cast<int64_t>(pending_.size()) >= options_.flush_logs_every_n_steps()) flush();
}

void CsvLogger::log_hyperparams(const std::map<std::string, std::string>& hparams) {
  if (!dir_ready_) use_dir(dir_);  // not attached: rank 0's
  write_hparams_yaml(hparams_file_, hparams);
}

void CsvLogger::flush() {
  if (pending_.empty()) return;
  if (!dir_ready_) use_dir(dir_);  // not attached: rank 0's
  std::set<std::string> names(columns_.begin(), columns_.end());
  for (const Row& row : pending_) {
    for (const auto& [name, value] : row) names.insert(name);
  }
  const std::vector<std::string> columns(names.begin(), names.end());
  const bool exists = fs::exists(metrics_file_);
  if (exists && columns != columns_) rewrite_with(columns);
  std::ofstream out(metrics_file_, std::ios::app);
  if (!out) fail(metrics_file_, "append metrics");
  if (!exists || fs::file_size(metrics_file_) == 0) out << header(columns) << '\n';
  for (const Row& row : pending_) out << join(columns, row) << '\n';
  out.flush();
  if (!out) fail(metrics_file_, "append metrics");
  columns_ = columns;
  pending_.clear();
}

void CsvLogger::rewrite_with(const std::vector<std::string>& columns) {
  std::vector<Row> rows;
  {
    std::ifstream in(metrics_file_);
    std::string line;
    std::getline(in, line);  // the old header, columns_
    while (std::getline(in, line)) {
      const std::vector<std::string> fields = parse_line(line);
      Row row;
      for (size_t i = 0; i < fields.size() && i < columns_.size(); ++i) {
        if (!fields[i].empty()) row[columns_[i]] = fields[i];
      }
      rows.push_back(std::move(row));
    }
  }
  // Write beside and rename, so that a crash leaves either the old file or the new one.
  const std::string temporary = metrics_file_ + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    if (!out) fail(temporary, "write metrics");
    out << header(columns) << '\n';
    for (const Row& row : rows) out << join(columns, row) << '\n';
    if (!out.flush()) fail(temporary, "write metrics");
  }
  std::error_code error;
  fs::rename(temporary, metrics_file_, error);
  if (error)
    throw std::runtime_error(metrics_file_ + ": cannot replace it with the wider header (" +
                             error.message() + ")");
}

}  // namespace trainbus::observers
