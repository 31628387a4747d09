// detail::exp_fp32 (token_ops.h) on 16 AVX-512 lanes: the same IEEE operations in the same order,
// hence the same bits (the router and token-ops tests check this against the scalar function).
// Internal to kernels/src: include it inside a `#pragma GCC target("avx512f,...")` region and a
// namespace of the including file; it defines no namespace of its own.
#pragma once
// (no includes: it lands inside the includer's namespace; the includer has <immintrin.h>.)

inline __m512 exp_fp32(__m512 t) {
  const __mmask16 nan = _mm512_cmp_ps_mask(t, t, _CMP_UNORD_Q);
  const __mmask16 low = _mm512_cmp_ps_mask(t, _mm512_set1_ps(-86.5f), _CMP_LT_OQ);
  const __m512 tc = _mm512_min_ps(t, _mm512_set1_ps(89.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(tc, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693147182464599609375f), tc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-1.90465429995e-09f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(126)), 23);
  __m512 out = _mm512_mul_ps(_mm512_add_ps(p, p), _mm512_castsi512_ps(bits));
  out = _mm512_mask_mov_ps(out, low, _mm512_setzero_ps());
  return _mm512_mask_mov_ps(out, nan, t);
}
