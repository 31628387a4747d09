# Runs one deepfit command line and checks its exit code, stderr and stdout substrings (or a golden
# file). Invoked as:
#   cmake -DEXE=... -DEXPECT_RC=2 -DNARGS=3 -DARG0=a -DARG1=b -DARG2=c
#         [-DSTDERR_HAS0=... -DSTDERR_HAS1=...] [-DSTDOUT_HAS0=...] [-DSTDOUT_LACKS0=...]
#         [-DSTDOUT_EMPTY=1] [-DGOLDEN=file] -P run_case.cmake
# One -D per argument: add_test splits a ';' inside any of its arguments into separate arguments,
# so a list can't travel in one -D. The older single forms -DARGS="a;b" (from a shell),
# -DSTDERR_HAS=... and -DSTDOUT_HAS=... still work.
# cmake -D trims trailing blanks from a value: don't end a substring with a space.
# Exit code 2 is bad input, and its contract is checked always: exactly one line "error: ..." on
# stderr, nothing on stdout (STYLE.md section 7).
cmake_minimum_required(VERSION 3.25)

if(DEFINED NARGS)
  set(ARGS "")
  if(NARGS GREATER 0)
    math(EXPR last "${NARGS} - 1")
    foreach(i RANGE 0 ${last})
      if(NOT DEFINED ARG${i})
        message(FATAL_ERROR "run_case.cmake: NARGS=${NARGS} but ARG${i} is not given")
      endif()
      list(APPEND ARGS "${ARG${i}}")
    endforeach()
  endif()
endif()

# Numbered substrings NAME0, NAME1, ... plus the single legacy NAME, as a list in `out_var`.
function(collect prefix out_var)
  set(found "")
  if(DEFINED ${prefix})
    list(APPEND found "${${prefix}}")
  endif()
  set(i 0)
  while(DEFINED ${prefix}${i})
    list(APPEND found "${${prefix}${i}}")
    math(EXPR i "${i} + 1")
  endwhile()
  set(${out_var} "${found}" PARENT_SCOPE)
endfunction()
collect(STDERR_HAS stderr_has)
collect(STDOUT_HAS stdout_has)
collect(STDOUT_LACKS stdout_lacks)

execute_process(COMMAND ${EXE} ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(shown "command: ${EXE} ${ARGS}\nstdout:\n${out}\nstderr:\n${err}")
if(NOT rc STREQUAL "${EXPECT_RC}")
  message(FATAL_ERROR "exit code ${rc}, expected ${EXPECT_RC}\n${shown}")
endif()

foreach(s IN LISTS stderr_has)
  string(FIND "${err}" "${s}" pos)
  if(pos EQUAL -1)
    message(FATAL_ERROR "stderr lacks '${s}'\n${shown}")
  endif()
endforeach()
foreach(s IN LISTS stdout_has)
  string(FIND "${out}" "${s}" pos)
  if(pos EQUAL -1)
    message(FATAL_ERROR "stdout lacks '${s}'\n${shown}")
  endif()
endforeach()
foreach(s IN LISTS stdout_lacks)
  string(FIND "${out}" "${s}" pos)
  if(NOT pos EQUAL -1)
    message(FATAL_ERROR "stdout has '${s}', which it must not\n${shown}")
  endif()
endforeach()

if(EXPECT_RC STREQUAL "2")
  # Bad input is one line "error: ..." on stderr.
  string(REGEX MATCHALL "\n" lines "${err}")
  list(LENGTH lines nlines)
  if(NOT nlines EQUAL 1 OR NOT err MATCHES "^error: ")
    message(FATAL_ERROR "expected exactly one stderr line starting with 'error: ', got ${nlines} lines\n${shown}")
  endif()
  set(STDOUT_EMPTY 1)
endif()
if(STDOUT_EMPTY AND NOT out STREQUAL "")
  message(FATAL_ERROR "expected no stdout (nothing partially written)\n${shown}")
endif()
if(DEFINED GOLDEN)
  file(READ "${GOLDEN}" want)
  if(NOT out STREQUAL want)
    file(WRITE "${GOLDEN}.actual" "${out}")
    message(FATAL_ERROR "stdout differs from ${GOLDEN} (actual written to ${GOLDEN}.actual)")
  endif()
endif()
