# `cmake --install build` puts the headers, the static libraries and a CMake package config in
# place, so that a user's project does:
#   find_package(trainbus REQUIRED)
#   target_link_libraries(app PRIVATE trainbus::trainbus)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# trainbus::trainbus: everything a user links.
add_library(trainbus_all INTERFACE)
add_library(trainbus::trainbus ALIAS trainbus_all)
set_target_properties(trainbus_all PROPERTIES EXPORT_NAME trainbus)
target_link_libraries(trainbus_all INTERFACE trainbus::events trainbus::core trainbus::observers)

install(TARGETS trainbus_events trainbus_proto trainbus_checkpoint_writer trainbus_core trainbus_loggers trainbus_observers trainbus_all
        EXPORT trainbusTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS trainbus RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# Public headers, keeping the repository layout (#include "core/trainer.h").
foreach(dir events core observers)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/${dir}
          FILES_MATCHING PATTERN "*.h"
          PATTERN "torch_pch.h" EXCLUDE        # build-only
          PATTERN "trainer_hooks.h" EXCLUDE)   # private to core/
endforeach()
install(DIRECTORY ${PROJECT_BINARY_DIR}/generated/proto/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/proto
        FILES_MATCHING PATTERN "*.pb.h")

install(EXPORT trainbusTargets NAMESPACE trainbus:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/trainbus)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/trainbusConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/trainbusConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/trainbus)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/trainbusConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/trainbusConfig.cmake ${PROJECT_BINARY_DIR}/trainbusConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/trainbus)
