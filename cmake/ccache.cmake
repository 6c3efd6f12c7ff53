# Compile through ccache when it is installed, in depend mode (no preprocessor run on a miss).
# NOTE: no include_file_mtime/ctime sloppiness: with it, a header edited while a build runs gets
# cached with the object compiled from its old text, and later builds reuse that stale object.
find_program(TRAINBUS_CCACHE ccache)
if(TRAINBUS_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env CCACHE_DEPEND=1 CCACHE_SLOPPINESS=pch_defines,time_macros
      ${TRAINBUS_CCACHE})
endif()
