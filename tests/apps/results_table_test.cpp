// The validate/test results table with several dataloaders, against what Lightning prints.
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "apps/evaluate_command.h"

using namespace trainbus;

namespace {

std::string bar(int width) {
  std::string line;
  for (int i = 0; i < width; ++i) line += "\u2500";
  return line + "\n";
}

const std::vector<Metrics> kTwoLoaders{
    {{"val_loss/dataloader_idx_0", 0.5}, {"shared", 2.0}},
    {{"val_loss/dataloader_idx_1", 0.25}, {"shared", 2.0}, {"only_1", 3.0}}};

}  // namespace

TEST_CASE("The results table has one column per dataloader, as Lightning's", "[apps]") {
  // Made with Lightning's _EvaluationLoop._print_results (loops/evaluation_loop.py, without rich)
  // on these two dicts and a terminal of 80 columns: the `/dataloader_idx_N` suffixes removed,
  // names sorted, " " where a dataloader has no value, columns of max(25, longest name) capped at
  // half the width.
  const std::string expected =
      bar(80) + "     Validate metric           DataLoader 0             DataLoader 1\n" + bar(80) +
      "         only_1                                              3.0\n"
      "         shared                     2.0                      2.0\n"
      "        val_loss                    0.5                     0.25\n" +
      bar(80);
  CHECK(apps::results_table(Stage::kValidate, kTwoLoaders, 80) == expected);
}

TEST_CASE("Dataloader columns that do not fit go into further tables, as Lightning's", "[apps]") {
  // Lightning, 60 columns: int((60 - 25) / 25) = 1 dataloader per table.
  const std::string expected = bar(60) + "     Validate metric           DataLoader 0\n" + bar(60) +
                               "         only_1\n"
                               "         shared                     2.0\n"
                               "        val_loss                    0.5\n" +
                               bar(60) + bar(60) + "     Validate metric           DataLoader 1\n" +
                               bar(60) +
                               "         only_1                     3.0\n"
                               "         shared                     2.0\n"
                               "        val_loss                   0.25\n" +
                               bar(60);
  CHECK(apps::results_table(Stage::kValidate, kTwoLoaders, 60) == expected);
}

TEST_CASE("One dataloader keeps the single-column table", "[apps]") {
  const std::string expected = bar(80) + "       Test metric             DataLoader 0\n" + bar(80) +
                               "        test_acc                   0.75\n" + bar(80);
  CHECK(apps::results_table(Stage::kTest, Metrics{{"test_acc", 0.75}}, 80) == expected);
}
