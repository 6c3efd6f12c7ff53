# Compile through ccache when it is installed. Depend mode (no preprocessor run on a miss) and the
# sloppiness settings let ccache work with the precompiled header of the torch-heavy targets.
find_program(TRAINBUS_CCACHE ccache)
if(TRAINBUS_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env CCACHE_DEPEND=1 CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      ${TRAINBUS_CCACHE})
endif()
