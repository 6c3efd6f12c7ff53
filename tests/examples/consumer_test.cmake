# Installs this build of trainbus into a scratch prefix, builds examples/consumer against it with
# find_package(trainbus), and runs it. Run by ctest as: cmake -DBUILD_DIR=... -DSOURCE_DIR=... -P this
set(prefix "${BUILD_DIR}/consumer-test/install")
set(consumer_build "${BUILD_DIR}/consumer-test/build")
file(REMOVE_RECURSE "${BUILD_DIR}/consumer-test")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "failed (${result}): ${ARGN}")
  endif()
endfunction()

run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples/consumer" -B "${consumer_build}" -G Ninja
    -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${prefix}" ${LAUNCHER})
run(${CMAKE_COMMAND} --build "${consumer_build}")
# In its build directory: Lightning's default set writes a ModelCheckpoint there, and draws a
# progress bar.
execute_process(COMMAND "${consumer_build}/consumer" WORKING_DIRECTORY "${consumer_build}"
                RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "failed (${result}): ${consumer_build}/consumer")
endif()
file(GLOB default_checkpoints "${consumer_build}/checkpoints/*.ckpt")
if(NOT default_checkpoints)
  message(FATAL_ERROR "the consumer's Trainer wrote no checkpoint into ${consumer_build}/checkpoints: "
                      "the installed package lost its default ModelCheckpoint")
endif()
