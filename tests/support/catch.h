#pragma once
// Catch2 for tests that include LibTorch. Debian's LibTorch logs through glog, whose logging.h
// defines a CHECK macro that would replace Catch2's. Including it first (it has include guards)
// and dropping its CHECK lets Catch2 define its own; trainbus and the tests never use glog's.
#include <c10/util/Logging.h>
#undef CHECK
#include <catch2/catch.hpp>
