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
target_link_libraries(trainbus_all INTERFACE trainbus::core trainbus::callbacks trainbus::observers
                      trainbus::record trainbus::replay trainbus::tuner)

# Every library with its public headers (the HEADERS file sets: include/<folder>/*.h, as in this
# repository; detail/ headers are in no file set and stay behind).
get_property(libraries GLOBAL PROPERTY TRAINBUS_LIBRARIES)
install(TARGETS ${libraries} trainbus_all
        EXPORT trainbusTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        FILE_SET HEADERS DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS trainbus RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

install(EXPORT trainbusTargets NAMESPACE trainbus:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/trainbus)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/trainbusConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/trainbusConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/trainbus)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/trainbusConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/trainbusConfig.cmake ${PROJECT_BINARY_DIR}/trainbusConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/trainbus)
