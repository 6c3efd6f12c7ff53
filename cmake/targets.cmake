# trainbus_library(<folder> SOURCES <.cpp...> HEADERS <public .h...>)
#
# One folder = one library target `trainbus::<folder>` (trainbus_<folder> in this build), built from
# the folder's sources. Its public headers form the target's HEADERS file set, installed as
# include/<folder>/...; headers under <folder>/detail/ are private and listed nowhere, so they are
# neither installed nor part of the interface.
function(trainbus_library folder)
  cmake_parse_arguments(ARG "" "" "SOURCES;HEADERS" ${ARGN})
  set(target trainbus_${folder})
  add_library(${target} ${ARG_SOURCES})
  add_library(trainbus::${folder} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${folder})
  target_sources(${target} PUBLIC FILE_SET HEADERS BASE_DIRS ${PROJECT_SOURCE_DIR} FILES ${ARG_HEADERS})
  target_compile_features(${target} PUBLIC cxx_std_17)
  target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:trainbus_warnings>)
  set_property(GLOBAL APPEND PROPERTY TRAINBUS_LIBRARIES ${target})
endfunction()
