# CLI cases: each runs `deepfit` through tests/cli/run_case.cmake and checks the exit code and
# substrings of stderr/stdout. Exit code 2 cases also get the bad-input contract checked by
# run_case.cmake: one "error: ..." line on stderr and nothing on stdout.
# Included from tests/CMakeLists.txt, so CMAKE_CURRENT_SOURCE_DIR is tests/.

# deepfit_cli_case(<name> <rc> ARGS <arg>... [STDERR <substring>...] [STDOUT <substring>...]
#                  [LACKS <substring>...] [EMPTY])
#   STDERR / STDOUT: substrings that must all appear; LACKS: substrings stdout must not contain;
#   EMPTY: stdout must be empty (implied for rc 2).
# Each argument and substring travels as its own -D (ARG<i>, STDERR_HAS<i>, ...): add_test would
# split a ';'-joined list. cmake -D trims trailing blanks and strips a value wrapped whole in
# single quotes: don't end a substring with a blank or write one as 'x'.
set(DEEPFIT_FIXTURES ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)

function(deepfit_cli_case name rc)
  cmake_parse_arguments(C "EMPTY" "" "ARGS;STDERR;STDOUT;LACKS" ${ARGN})
  if(C_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "deepfit_cli_case(${name}): unexpected arguments ${C_UNPARSED_ARGUMENTS}")
  endif()
  set(cmd ${CMAKE_COMMAND} "-DEXE=$<TARGET_FILE:deepfit>" "-DEXPECT_RC=${rc}")
  list(LENGTH C_ARGS nargs)
  list(APPEND cmd "-DNARGS=${nargs}")
  foreach(kind IN ITEMS ARGS:ARG STDERR:STDERR_HAS STDOUT:STDOUT_HAS LACKS:STDOUT_LACKS)
    string(REPLACE ":" ";" kind "${kind}")
    list(GET kind 0 key)
    list(GET kind 1 var)
    set(i 0)
    foreach(value IN LISTS C_${key})
      list(APPEND cmd "-D${var}${i}=${value}")
      math(EXPR i "${i} + 1")
    endforeach()
  endforeach()
  if(C_EMPTY)
    list(APPEND cmd "-DSTDOUT_EMPTY=1")
  endif()
  add_test(NAME cli.${name} COMMAND ${cmd} -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_case.cmake)
  set_tests_properties(cli.${name} PROPERTIES LABELS cli ENVIRONMENT "DEEPFIT_HOME=${PROJECT_SOURCE_DIR}")
endfunction()

# The setup most error cases start from: a valid fit apart from the one bad flag.
set(V32 fit --model deepseek-v3.2 --quant fp8 --device h200-sxm)

# --- Bad input: exit 2, one stderr line naming the flag or file ---
deepfit_cli_case(unknown_model 2 ARGS fit --model deepseek-v9 --device h100-sxm
                 STDERR "unknown model 'deepseek-v9'" "closest: deepseek-v3")
deepfit_cli_case(unknown_device 2 ARGS fit --model deepseek-v3.2 --quant fp8 --device h100sxm
                 STDERR "unknown device 'h100sxm'" "h100-sxm")
deepfit_cli_case(unknown_quant 2 ARGS fit --model deepseek-v3.2 --quant q4_k_x --device h100-sxm
                 STDERR "unknown quantization 'q4_k_x'" "q4_k_m")
deepfit_cli_case(unknown_flag 2 ARGS ${V32} --frobnicate STDERR "--frobnicate")
deepfit_cli_case(count_zero 2 ARGS ${V32} --count 0 STDERR "--count" "got '0'")
deepfit_cli_case(count_not_a_number 2 ARGS ${V32} --count abc STDERR "--count" "got 'abc'")
deepfit_cli_case(context_negative 2 ARGS ${V32} --context -5 STDERR "--context" "'-5' is not a whole number")
deepfit_cli_case(context_trailing_junk 2 ARGS ${V32} --context 12x STDERR "--context" "'12x' is not a whole number")
deepfit_cli_case(context_beyond_model 2 ARGS ${V32} --context 10000000 STDERR "--context" "beyond")
deepfit_cli_case(concurrency_empty_item 2 ARGS ${V32} --concurrency 1,,8 STDERR "--concurrency" "1,,8")
# DeepSeek-V3.2 has 128 attention heads: tp7 splits none of them evenly.
deepfit_cli_case(parallel_tp_not_dividing_heads 2 ARGS ${V32} --count 7 --parallel tp7
                 STDERR "--parallel tp7" "does not divide" "128")
deepfit_cli_case(parallel_count_mismatch 2 ARGS ${V32} --count 4 --parallel tp8 STDERR "--parallel tp8" "--count")
deepfit_cli_case(parallel_unknown_component 2 ARGS ${V32} --count 8 --parallel xx8 STDERR "--parallel" "component 'xx'")
deepfit_cli_case(kv_dtype_not_for_framework 2 ARGS ${V32} --framework vllm --kv-dtype q8_0 STDERR "--kv-dtype" "q8_0")
deepfit_cli_case(offload_layers_not_a_number 2 ARGS ${V32} --offload layers:abc STDERR "--offload" "layers:abc")
deepfit_cli_case(format_unknown 2 ARGS ${V32} --format xml STDERR "--format" "format 'xml'")
deepfit_cli_case(model_file_unknown_architecture 2
                 ARGS fit --model ${DEEPFIT_FIXTURES}/models/unknown_arch.json --device h100-sxm
                 STDERR "unknown_arch.json" "/architectures/0" "unsupported architecture 'FooForCausalLM'"
                        "DeepseekV32ForCausalLM")
deepfit_cli_case(model_file_malformed 2 ARGS fit --model ${DEEPFIT_FIXTURES}/models/malformed.json --device h100-sxm
                 STDERR "malformed.json" "malformed JSON" "line 5")
deepfit_cli_case(model_file_negative_layers 2
                 ARGS fit --model ${DEEPFIT_FIXTURES}/models/negative_layers.json --device h100-sxm
                 STDERR "/num_hidden_layers" "-3" "out of range")
deepfit_cli_case(device_file_unknown_key 2 ARGS devices --device-file ${DEEPFIT_FIXTURES}/devices/unknown-key.json
                 STDERR "unknown-key.json" "/mem_bw_gpbs" "unknown key 'mem_bw_gpbs'")

# --- Success ---
deepfit_cli_case(help 0 ARGS --help STDOUT "Usage:")
deepfit_cli_case(version 0 ARGS --version STDOUT "deepfit")
deepfit_cli_case(models_json 0 ARGS models --format json STDOUT "\"models\"" "\"deepseek-v3.2\"")
deepfit_cli_case(devices_json 0 ARGS devices --format json STDOUT "\"devices\"" "\"h100-sxm\"")
deepfit_cli_case(quants 0 ARGS quants STDOUT "q4_k_m")

# --- Verdicts (DeepSeek-V3.2, "fits" of the single concurrency; see planner/src/fit.cpp) ---
# One H100 is far too small even at Q4_K_M (~404 GB of weights), so the fewest-devices count is reported.
deepfit_cli_case(fit_v32_q4_one_h100 0
                 ARGS fit --model deepseek-v3.2 --quant q4_k_m --device h100-sxm --format json
                 STDOUT "\"fits\": false" "\"min_devices\":" LACKS "\"fits\": true" "\"min_devices\": null")
# FP8 weights alone are ~86 GB per device at tp8, more than an H100's 80 GiB.
deepfit_cli_case(fit_v32_fp8_8x_h100 0
                 ARGS fit --model deepseek-v3.2 --quant fp8 --device h100-sxm --count 8 --format json
                 STDOUT "\"fits\": false" LACKS "\"fits\": true")
set(V32_H200X8 fit --model deepseek-v3.2 --quant fp8 --device h200-sxm --count 8 --concurrency 128 --framework vllm
    --format json)
deepfit_cli_case(fit_v32_fp8_8x_h200_tp8_2k 0 ARGS ${V32_H200X8} --context 2K --parallel tp8
                 STDOUT "\"fits\": true" LACKS "\"fits\": false")
# tp8 keeps MLA's whole latent cache on every rank: 128 x 8K tokens no longer fit ...
deepfit_cli_case(fit_v32_fp8_8x_h200_tp8_8k 0 ARGS ${V32_H200X8} --context 8K --parallel tp8
                 STDOUT "\"fits\": false" LACKS "\"fits\": true")
# ... attention data parallelism divides it by 8, and they do.
deepfit_cli_case(fit_v32_fp8_8x_h200_dp8_8k 0 ARGS ${V32_H200X8} --context 8K --parallel tp1ep8dp8
                 STDOUT "\"fits\": true" LACKS "\"fits\": false")

# The host probe writes its record under XDG_CACHE_HOME; keep it inside the build tree.
add_test(NAME cli.probe_json COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:deepfit> -DNARGS=4 -DARG0=probe -DARG1=--refresh
         -DARG2=--format -DARG3=json -DEXPECT_RC=0 "-DSTDOUT_HAS0=\"id\": \"host\"" -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_case.cmake)
set_tests_properties(cli.probe_json PROPERTIES LABELS cli RUN_SERIAL TRUE
                     ENVIRONMENT "DEEPFIT_HOME=${PROJECT_SOURCE_DIR};XDG_CACHE_HOME=${CMAKE_CURRENT_BINARY_DIR}/cache")
add_test(NAME cli.fit_on_host COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:deepfit> -DNARGS=7 -DARG0=fit -DARG1=--model
         -DARG2=llama-3.2-3b -DARG3=--device -DARG4=host -DARG5=--format -DARG6=json -DEXPECT_RC=0
         "-DSTDOUT_HAS0=\"device\": \"host\"" -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_case.cmake)
set_tests_properties(cli.fit_on_host PROPERTIES LABELS cli DEPENDS cli.probe_json
                     ENVIRONMENT "DEEPFIT_HOME=${PROJECT_SOURCE_DIR};XDG_CACHE_HOME=${CMAKE_CURRENT_BINARY_DIR}/cache")

# deepfit regress / history on fixtures: exit 1 on a regression, 0 without, 2 on bad input.
set(_bench ${PROJECT_SOURCE_DIR}/tests/fixtures/bench)
deepfit_cli_case(regress_slowdown 1 ARGS regress ${_bench}/base.json ${_bench}/slow.json STDOUT "regression")
deepfit_cli_case(regress_same 0 ARGS regress ${_bench}/base.json ${_bench}/same.json STDOUT "only in new: BM_new")
deepfit_cli_case(regress_units 1 ARGS regress ${_bench}/base.json ${_bench}/slow_us.json --format json STDOUT "\"regressions\": 1")
deepfit_cli_case(regress_few_reps 0 ARGS regress ${_bench}/three_reps.json ${_bench}/three_reps_slow.json STDOUT "not enough repetitions")
deepfit_cli_case(regress_malformed 2 ARGS regress ${_bench}/base.json ${_bench}/malformed.json STDERR "malformed JSON" EMPTY)
deepfit_cli_case(regress_bad_unit 2 ARGS regress ${_bench}/base.json ${_bench}/bad_unit.json STDERR "time_unit" EMPTY)
deepfit_cli_case(regress_no_benchmarks 2 ARGS regress ${_bench}/empty.json ${_bench}/base.json STDERR "no benchmarks" EMPTY)
deepfit_cli_case(regress_md 1 ARGS regress ${_bench}/base.json ${_bench}/slow.json --format md STDOUT "| BM_a/x:1")

# validate: the shipped reference evaluates; a malformed line is reported with its number, exit 1.
set(_ref ${PROJECT_SOURCE_DIR}/tests/fixtures/reference)
deepfit_cli_case(validate_bad_line 1 ARGS validate --reference ${_ref}/two_rows_one_bad.jsonl STDERR "line 2: malformed JSON")
deepfit_cli_case(validate_missing_file 2 ARGS validate --reference ${_ref}/no_such.jsonl STDERR "cannot open" EMPTY)

# predict: speed per concurrency; bad input exits 2.
deepfit_cli_case(predict_json 0 ARGS predict --model llama-3-8b --quant q4_k_m --device rtx-4090 --concurrency 1,4 --format json
                 STDOUT "\"tpot_ms\":" "\"expected_error_pct\":")
deepfit_cli_case(predict_no_device 2 ARGS predict --model llama-3-8b STDERR "missing --device" EMPTY)
deepfit_cli_case(predict_too_long 2 ARGS predict --model llama-3-8b --device rtx-4090 --input 8000 --output 1000 STDERR "exceed" EMPTY)
deepfit_cli_case(predict_bad_concurrency 2 ARGS predict --model llama-3-8b --device rtx-4090 --concurrency 1,x STDERR "--concurrency" EMPTY)
deepfit_cli_case(compare_json 0 ARGS compare --model deepseek-v3.2 --devices h200-sxm,b200 --format json STDOUT "\"pareto\": true")
deepfit_cli_case(compare_bad_device 2 ARGS compare --model deepseek-v3.2 --devices h200-sxm,h999 STDERR "unknown device" EMPTY)
deepfit_cli_case(compare_count_auto 0 ARGS compare --model deepseek-v3.2 --devices h200-sxm,b200 --request-rate 5 --count auto
                 STDOUT "req/s" "--count auto: per device and quantization")
deepfit_cli_case(compare_count_auto_needs_target 2 ARGS compare --model deepseek-v3.2 --count auto STDERR "--request-rate" EMPTY)
deepfit_cli_case(compare_bad_rate 2 ARGS compare --model deepseek-v3.2 --request-rate lots STDERR "--request-rate" EMPTY)
deepfit_cli_case(compare_bad_slo 2 ARGS compare --model deepseek-v3.2 --slo-tpot-ms fast STDERR "--slo-tpot-ms" EMPTY)
deepfit_cli_case(predict_context 0 ARGS predict --model llama-3-8b --device rtx-4090 --quant q4_k_m --context 1K,4K --concurrency 1
                 STDOUT "4096")
deepfit_cli_case(predict_mtp_workload_energy 0 ARGS predict --model deepseek-v3.2 --device h200-sxm --count 8 --mtp --workload sharegpt
                 --usd-per-kwh 0.12 --concurrency 1 --format json
                 STDOUT "\"energy_usd_per_mtok_output\":" "\"cost_usd_per_mtok_input\":" "MTP: one draft token accepted at 85 %")
deepfit_cli_case(predict_hybrid 0 ARGS predict --model deepseek-v3 --quant q4_k_m --device rtx-4090 --offload experts
                 --host-device xeon-gold-6454s --concurrency 1 STDOUT "hybrid: routed experts computed by xeon-gold-6454s")
deepfit_cli_case(predict_layer_split 0 ARGS predict --model llama-3.1-70b --quant q4_k_m --device rtx-4090 --framework llamacpp
                 --offload layers:40 --host-device epyc-9654 --concurrency 1 --input 512 --output 128
                 STDOUT "layer split: the last 40 layers and their KV computed by epyc-9654" "copying the host's weights over PCIe gen 4")
deepfit_cli_case(predict_layer_split_needs_host 2 ARGS predict --model llama-3.1-70b --quant q4_k_m --device rtx-4090 --framework llamacpp
                 --offload layers:40 STDERR "--offload layers:40: pass --host-device" EMPTY)
deepfit_cli_case(predict_unknown_workload 2 ARGS predict --model llama-3-8b --device rtx-4090 --workload shargpt
                 STDERR "unknown workload 'shargpt'" "sharegpt" EMPTY)
deepfit_cli_case(predict_workload_and_lengths 2 ARGS predict --model llama-3-8b --device rtx-4090 --workload sharegpt --input 100
                 STDERR "either --workload or --input/--output" EMPTY)
deepfit_cli_case(predict_hybrid_needs_host 2 ARGS predict --model deepseek-v3 --quant q4_k_m --device rtx-4090 --offload experts
                 STDERR "--host-device" EMPTY)
deepfit_cli_case(predict_host_not_cpu 2 ARGS predict --model deepseek-v3 --quant q4_k_m --device rtx-4090 --offload experts
                 --host-device h100-sxm STDERR "is not a CPU" EMPTY)
deepfit_cli_case(predict_bad_acceptance 2 ARGS predict --model deepseek-v3.2 --device h200-sxm --count 8 --mtp --mtp-acceptance 1.5
                 STDERR "--mtp-acceptance" EMPTY)

# --- deepfit bench (issue #4): the suite's names, bad input, one small case really run ---
deepfit_cli_case(bench_list 0 ARGS bench --list --filter "expert_gemv/q4_k/batch:1/"
                 STDOUT "BM_expert_gemv/q4_k/batch:1/threads:1" "BM_expert_gemv/q4_k/batch:1/small" LACKS "min_warmup_time" "bf16")
deepfit_cli_case(bench_bad_regex 2 ARGS bench --filter "gemv[" STDERR "--filter: 'gemv[' is not a valid regular expression" EMPTY)
deepfit_cli_case(bench_no_match 2 ARGS bench --filter "no_such_op" STDERR "matches none of the" "deepfit bench --list" EMPTY)
deepfit_cli_case(bench_bad_format 2 ARGS bench --format csv STDERR "--format: bench prints table or json" EMPTY)
deepfit_cli_case(bench_small_json 0 ARGS bench --quick --min-time 0.001 --filter "expert_gemv/q8_0/batch:1/small" --format json
                 STDOUT "\"run_name\": \"BM_expert_gemv/q8_0/batch:1/small\"" "\"git_commit\"" "\"hw_counters\"" "\"flops\""
                 LACKS "manual_time" "error_occurred")

# --- deepfit bench decode (issue #4): the decode loop on a tiny DeepSeek-V3.2-shaped config ---
set(TINY_V32 ${DEEPFIT_FIXTURES}/models/tiny-deepseek-v32.json)
deepfit_cli_case(bench_decode_json 0 ARGS bench decode --model ${TINY_V32} --context 40 --batch 2 --steps 1 --format json
                 STDOUT "\"decode_tok_s\"" "\"step_ms\"" "\"op\": \"mla_decode\"" "\"op\": \"dsa_topk\"" "\"op\": \"expert_ffn\"" "\"batch\": 2")
deepfit_cli_case(bench_decode_table 0 ARGS bench decode --model ${TINY_V32} --context 8 --steps 1 --quant fp8 --kv-cache fp8
                 STDOUT "tok/s" "mla_decode" "lm_head" "fp8 weights, fp8 cache")
deepfit_cli_case(bench_decode_not_mla 2 ARGS bench decode --model llama-3.1-8b STDERR "the host kernels cover DeepSeek MLA" EMPTY)
deepfit_cli_case(bench_decode_too_big 2 ARGS bench decode --model deepseek-v3.2 STDERR "exceed" "hint: scale it, e.g. --layers 4 --experts 16" EMPTY)
deepfit_cli_case(bench_decode_bad_quant 2 ARGS bench decode --model ${TINY_V32} --context 8 --quant q5_k STDERR "--quant: 'q5_k' is not a host kernel format" EMPTY)
deepfit_cli_case(bench_decode_bad_experts 2 ARGS bench decode --model ${TINY_V32} --context 8 --experts 3 STDERR "--experts: 3 must be between" EMPTY)

# validate without --reference: the host decode loop on the tiny model at six points, against the
# planner's prediction on the probe's record (written by cli.probe_json under the build tree).
deepfit_cli_case(validate_host_json 0 ARGS validate --model ${TINY_V32} --layers 0 --experts 0 --steps 2
                 --points 1x8,1x200,4x64,8x8,3x100,2x400 --format json --write-calibration ${CMAKE_CURRENT_BINARY_DIR}/host-calibration.json
                 STDOUT "\"id\": \"host:batch4:ctx64\"" "\"median_abs_error_pct\"" "\"attention_factor\"" "\"skipped\": []")
set_tests_properties(cli.validate_host_json PROPERTIES DEPENDS cli.probe_json
                     ENVIRONMENT "DEEPFIT_HOME=${PROJECT_SOURCE_DIR};XDG_CACHE_HOME=${CMAKE_CURRENT_BINARY_DIR}/cache")
deepfit_cli_case(validate_host_too_few 2 ARGS validate --model ${TINY_V32} --points 1x8,2x8 STDERR "at least 5 are needed" EMPTY)
deepfit_cli_case(validate_host_bad_point 2 ARGS validate --points 1x8,2y8 STDERR "--points: '2y8' has no 'x'" EMPTY)
deepfit_cli_case(validate_host_flag_with_reference 2 ARGS validate --reference ${DEEPFIT_FIXTURES}/x.jsonl --points 1x8
                 STDERR "are for the host mode" EMPTY)
# predict on this host with the fit validate just wrote; the wrong file or device is refused.
deepfit_cli_case(predict_host_calibrated 0 ARGS predict --model ${TINY_V32} --quant q8_0 --device host --framework deepfit
                 --host-calibration ${CMAKE_CURRENT_BINARY_DIR}/host-calibration.json --concurrency 1,4 --input 64 --output 16 --format json
                 STDOUT "host decode loop on" "\"expected_error_pct\"" "fitted with q4_k matrices, applied to q8_0")
set_tests_properties(cli.predict_host_calibrated PROPERTIES DEPENDS cli.validate_host_json
                     ENVIRONMENT "DEEPFIT_HOME=${PROJECT_SOURCE_DIR};XDG_CACHE_HOME=${CMAKE_CURRENT_BINARY_DIR}/cache")
deepfit_cli_case(predict_host_calibration_wrong_file 2 ARGS predict --model ${TINY_V32} --device h100-sxm
                 --host-calibration ${PROJECT_SOURCE_DIR}/data/calibration.json STDERR "/kind: expected \"host_decode_loop\"" EMPTY)
deepfit_cli_case(predict_host_calibration_not_cpu 2 ARGS predict --model ${TINY_V32} --device h100-sxm --framework deepfit
                 --host-calibration ${CMAKE_CURRENT_BINARY_DIR}/host-calibration.json STDERR "h100-sxm is not a CPU" EMPTY)
set_tests_properties(cli.predict_host_calibration_not_cpu PROPERTIES DEPENDS cli.validate_host_json)

# --- deepfit report (issue #6): the HTML report from result documents, bad documents refused ---
deepfit_cli_case(report_bad_doc 2 ARGS report --html ${CMAKE_CURRENT_BINARY_DIR}/never.html --from ${DEEPFIT_FIXTURES}/models/tiny-deepseek-v32.json
                 STDERR "not a deepfit result document" EMPTY)
deepfit_cli_case(report_no_compute 0 ARGS report --html ${CMAKE_CURRENT_BINARY_DIR}/empty-report.html --no-compute
                 STDERR "report: wrote")
