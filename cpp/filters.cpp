#include "filters.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <system_error>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>  // only used inside functions compiled for AVX2 / AVX-512
#endif

namespace agent {

namespace {

constexpr double kPi = 3.141592653589793;  // the same double as Python's math.pi

void require_positive(const char* name, double v) {
    if (!std::isfinite(v) || !(v > 0.0)) {
        throw InvalidValue(name, "must be a finite number > 0", v);
    }
}

void require_non_negative(const char* name, double v) {
    if (!std::isfinite(v) || !(v >= 0.0)) {
        throw InvalidValue(name, "must be a finite number >= 0", v);
    }
}

void require_finite(const char* name, double v) {
    if (!std::isfinite(v)) {
        throw InvalidValue(name, "must be finite", v);
    }
}

// Checked before a batch runs, so a bad value anywhere leaves the filter untouched.
void require_all_finite(const double* in, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        if (!std::isfinite(in[i])) {
            throw InvalidValue("values[" + std::to_string(i) + "]", "must be finite", in[i]);
        }
    }
}

}  // namespace

InvalidValue::InvalidValue(std::string subject, std::string requirement, double got)
    : std::invalid_argument(subject + " " + requirement + ", got " + format_double(got)),
      subject_(std::move(subject)),
      requirement_(std::move(requirement)),
      got_(got) {}

std::string format_double(double x) {
    if (std::isnan(x)) return "nan";
    if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
    char buf[32];
    auto res = std::to_chars(buf, buf + sizeof buf, x);
    if (res.ec != std::errc()) return std::to_string(x);
    return std::string(buf, res.ptr);
}

// ---------------------------------------------------------------------------------------
// Pt1Filter

Pt1Filter::Pt1Filter(double tau, double dt) : tau_(tau), dt_(dt), alpha_(0.0) {
    require_positive("tau", tau);
    require_positive("dt", dt);
    alpha_ = dt / (tau + dt);
}

double Pt1Filter::step(double x) noexcept {
    if (!y_) {
        y_ = x;
        return x;
    }
    double y = *y_;
    y += alpha_ * (x - y);
    y_ = y;
    return y;
}

double Pt1Filter::update(double x) {
    require_finite("raw", x);
    return step(x);
}

void Pt1Filter::update_many(const double* in, std::size_t n, double* out) {
    require_all_finite(in, n);
    if (n == 0) return;
    std::size_t i = 0;
    if (!y_) out[i++] = step(in[0]);
    // A batch is one long chain y -> y, and its speed is the latency of the arithmetic between
    // two y's: sub -> mul -> add per sample in step(). Four samples per step shorten it.
    // Written as deltas from the y0 the step starts at, d_k = x_k - y0, and e_k = y_k - y0,
    // the recursion y_k = y_(k-1) + a*(x_k - y_(k-1)) reads e_k = (1 - a)*e_(k-1) + a*d_k,
    // e_0 = 0; so with b = 1 - a:
    //   e1 = a*d1
    //   e2 = a*b*d1 + a*d2
    //   e3 = a*b^2*d1 + a*b*d2 + a*d3
    //   e4 = a*b^3*d1 + a*b^2*d2 + a*b*d3 + a*d4
    // y0 -> y4 is then sub -> mul -> add -> add -> add (summed as a tree): five operations for
    // four samples instead of twelve; e1..e3 are off that chain. A constant input (all d = 0)
    // stays exactly constant; otherwise the result differs from step()'s rounding by a few
    // ulps of the magnitudes involved.
    double y = *y_;
    const double a = alpha_;
    const double b = 1.0 - a;
    const double c1 = a * b;       // a*b
    const double c2 = c1 * b;      // a*b^2
    const double c3 = c2 * b;      // a*b^3
    for (; i + 3 < n; i += 4) {
        const double d1 = in[i] - y;
        const double d2 = in[i + 1] - y;
        const double d3 = in[i + 2] - y;
        const double d4 = in[i + 3] - y;
        const double e2 = c1 * d1 + a * d2;
        out[i] = y + a * d1;
        out[i + 1] = y + e2;
        out[i + 2] = y + ((c2 * d1 + c1 * d2) + a * d3);
        y += (c3 * d1 + c2 * d2) + (c1 * d3 + a * d4);
        out[i + 3] = y;
    }
    for (; i < n; ++i) {  // the last one to three samples: as step() does them
        y += a * (in[i] - y);
        out[i] = y;
    }
    y_ = y;
}

void Pt1Filter::set_state(std::optional<double> y) {
    if (y) require_finite("y", *y);
    y_ = y;
}

// ---------------------------------------------------------------------------------------
// MedianFilter

MedianFilter::MedianFilter(std::size_t window) : window_(window), padded_(0), stride_(0) {
    if (window < 1) {
        throw std::invalid_argument("window must be an integer >= 1, got " +
                                    std::to_string(window));
    }
    padded_ = window_ + (window_ % 2);
    stride_ = padded_ + 2;
}

namespace {

// Windows up to this size take the full branch-free pass (two sorted copies); larger ones the
// in-place replacement (one copy). See replace_sorted and replace_sorted_in_place.
constexpr std::size_t kFullPassMaxWindow = 100;

}  // namespace

void MedianFilter::allocate() {
    if (!buf_.empty()) return;
    constexpr double kInf = std::numeric_limits<double>::infinity();
    const std::size_t copies = window_ > kFullPassMaxWindow ? 1 : 2;
    buf_.assign(copies * stride_, kInf);
    for (std::size_t c = 0; c < copies; ++c) buf_[c * stride_] = -kInf;
    ring_.reserve(window_);
}

double MedianFilter::median() const noexcept {
    const std::size_t n = ring_.size();
    const std::size_t mid = n / 2;
    const double* s = sorted();
    if (n % 2 == 1) return s[mid];
    // Halving is exact, so a/2 + b/2 equals (a + b)/2 rounded once, without its overflow.
    return s[mid - 1] / 2 + s[mid] / 2;
}

namespace {

// Replaces one copy of `oldest` by x in the sorted window s (padded with +inf, s[-1] = -inf),
// writing the result to the other copy d. Two steps, each a selection between neighbours:
//
//   remove oldest: t[i] = s[i] < oldest ? s[i] : s[i+1]
//     (below the first copy of oldest nothing moves, from there on everything slides down);
//   insert x:      d[i] = max(min(t[i], x), t[i-1])
//     (t[i] while t[i] <= x, then x once, then t[i-1]: everything above x slides up).
//
// Both are fused into one pass that computes t[i-1] and t[i] from s[i-1], s[i], s[i+1], with
// no branch at all: neither on the data nor on the direction the window moves in (a branch on
// x >= oldest was a coin toss with sensor noise: a misprediction every other sample). The
// compiler vectorises it (two doubles per SSE2/NEON op); the x86 AVX2/AVX-512 kernels below
// do the same on four/eight doubles, keeping the window in registers.
//
// Values are only moved, never computed, so the result is exactly the new sorted multiset,
// down to the sign of a zero: std::min(t, x) is x < t ? x : t and std::max(m, t_prev) is
// m < t_prev ? t_prev : m, so an equal neighbour is never picked in place of the value itself
// (with the operands of max the other way round, a -0.0 next to a 0.0 would be copied over
// it). That removes the first copy of oldest and inserts x after its equals, as the Python
// reference's bisect_left/insort do, and the x86 kernels use the same operand order: every
// path gives the same bits. The +inf padding stays +inf, s[-1] is never written.
//
// s and d never overlap (__restrict, a GCC/Clang/MSVC extension, spares the vectoriser a
// run-time overlap check); m is the padded length.
inline void replace_sorted(const double* __restrict s, double* __restrict d, std::size_t m,
                           double oldest, double x) noexcept {
    for (std::size_t i = 0; i < m; ++i) {
        // Loaded up front: a load inside a ?: arm would be a branch the vectoriser refuses.
        const double below = s[i - 1];
        const double here = s[i];
        const double above = s[i + 1];
        const double t_prev = below < oldest ? below : here;
        const double t = here < oldest ? here : above;
        d[i] = std::max(std::min(t, x), t_prev);
    }
}

// The same replacement in place, touching only the values between the two positions: two
// binary searches and one memmove. It wins over the full pass above for large windows, where
// the pass costs O(window) for every sample while this moves a third of the window on
// average (about 100 values is the break-even point on x86-64).
//
// The searches are branch-free (sensor noise makes std::lower_bound's branches unpredictable):
// the number of values in s[0..n) that are < v (Strict) or <= v (!Strict), n >= 1.
template <bool Strict>
std::size_t count_below(const double* s, std::size_t n, double v) noexcept {
    const double* base = s;
    while (n > 1) {
        const std::size_t half = n / 2;
        base = (Strict ? base[half] < v : base[half] <= v) ? base + half : base;
        n -= half;
    }
    return static_cast<std::size_t>(base - s) + (Strict ? *base < v : *base <= v);
}

void replace_sorted_in_place(double* s, std::size_t n, double oldest, double x) noexcept {
    const std::size_t j = count_below<true>(s, n, oldest);  // the first copy of oldest
    const std::size_t q = count_below<false>(s, n, x);      // just after the last value <= x
    if (x >= oldest) {
        // s[j+1 .. q-1] slide down one place; x lands after the last value <= x.
        std::memmove(s + j, s + j + 1, (q - 1 - j) * sizeof(double));
        s[q - 1] = x;
    } else {
        // s[q .. j-1] slide up one place; x lands before the first value > x.
        std::memmove(s + q + 1, s + q, (j - q) * sizeof(double));
        s[q] = x;
    }
}

// ---------------------------------------------------------------------------------------
// Runtime CPU dispatch of the median's batch pass (x86-64 with GCC or Clang only).
//
// The build has no -march: the code above is baseline SSE2 on x86-64 and NEON on arm64. The
// kernels below are compiled for AVX2 or AVX-512 by a function-level target attribute and
// only ever called after __builtin_cpu_supports said the CPU (and the OS) can run them, the
// way numpy dispatches its loops. A kernel runs a whole batch with the sorted window kept in
// vector registers, doing replace_sorted's two selections with lane shifts instead of
// unaligned loads (which would read values the previous sample has just stored, and stall:
// a load spanning two stores cannot be forwarded from them).
//
// Register layout: 2*H lanes (K vectors of L doubles, K even, H = K*L/2 >= (w+1)/2 for a
// window of w). The w sorted values sit at lanes p .. p+w-1 with -inf below and +inf above,
// p chosen so that the median is lane H (odd w) or lanes H-1 and H (even w): the first lane
// of vector K/2 and the last of vector K/2-1, fixed when the kernel is compiled. The -inf
// lanes stay -inf through both selections (-inf < oldest keeps them, and max(-inf, min(-inf,
// x)) is -inf), the +inf lanes stay +inf, as the padding does in the portable pass.

// One batch of the steady state: the ring is full, `sorted` holds its values in order.
// Advances ring and head, leaves the new window in `sorted`, writes one median per sample.
using MedianRun = void (*)(double* sorted, std::size_t window, double* ring, std::size_t& head,
                           const double* in, std::size_t n, double* out);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define AGENT_X86_DISPATCH 1

// The first lane of the window in a layout of 2*half lanes: the median, at index window/2 of
// the window (the upper of the two middle values for an even window), lands on lane `half`.
std::size_t kernel_offset(std::size_t window, std::size_t half) noexcept {
    return half - window / 2;
}

// The number of vectors of `lanes` doubles for a window: even, and at least (w+1)/2 lanes in
// each half.
constexpr std::size_t kernel_vectors(std::size_t window, std::size_t lanes) noexcept {
    return 2 * (((window + 1) / 2 + lanes - 1) / lanes);
}

// Copies the sorted window into a kernel's lanes, padded as described above, and back.
void to_lanes(const double* sorted, std::size_t window, double* lanes, std::size_t n_lanes) {
    constexpr double kInf = std::numeric_limits<double>::infinity();
    const std::size_t p = kernel_offset(window, n_lanes / 2);
    std::fill(lanes, lanes + p, -kInf);
    std::copy(sorted, sorted + window, lanes + p);
    std::fill(lanes + p + window, lanes + n_lanes, kInf);
}

void from_lanes(const double* lanes, std::size_t n_lanes, std::size_t window, double* sorted) {
    const std::size_t p = kernel_offset(window, n_lanes / 2);
    std::copy(lanes + p, lanes + p + window, sorted);
}

// Samples i < window find the value they replace in the ring; later ones find it in the
// input itself, window places back. So the loops below never touch the ring: it is brought
// up to date once, at the end of the batch.
void advance_ring(double* ring, std::size_t window, std::size_t& head, const double* in,
                  std::size_t n) noexcept {
    if (n >= window) {
        std::copy(in + (n - window), in + n, ring);
        head = 0;
        return;
    }
    for (std::size_t i = 0; i < n; ++i) {
        ring[head] = in[i];
        head = head + 1 == window ? 0 : head + 1;
    }
}

// GCC 12's AVX-512 headers start many intrinsics from `__m512d y = y;` (_mm512_undefined_pd),
// which its own -Wmaybe-uninitialized then reports wherever they are inlined (GCC bug 105593,
// fixed in GCC 13). Nothing here reads an undefined value.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// -----------------------------------------------------------------------------------------
// AVX-512: eight doubles a vector. valignq shifts lanes across two vectors in one
// instruction, a compare writes a mask register, a masked move selects.

#define AGENT_AVX512 __attribute__((target("avx512f"), always_inline)) inline

// replace_sorted on the registers s: remove `oldest`, insert x (both broadcast).
template <int K>
AGENT_AVX512 void replace_avx512(__m512d (&s)[K], __m512d x, __m512d oldest) {
    constexpr int L = 8;
    const __m512d pos_inf = _mm512_set1_pd(std::numeric_limits<double>::infinity());
    const __m512d neg_inf = _mm512_set1_pd(-std::numeric_limits<double>::infinity());
    // Remove oldest: t[j] = s[j] < oldest ? s[j] : s[j+1].
    __m512d t[K];
    for (int k = 0; k < K; ++k) {
        const __m512d above = k + 1 < K ? s[k + 1] : pos_inf;
        const __m512d next = _mm512_castsi512_pd(
            _mm512_alignr_epi64(_mm512_castpd_si512(above), _mm512_castpd_si512(s[k]), 1));
        const __mmask8 keep = _mm512_cmp_pd_mask(s[k], oldest, _CMP_LT_OQ);
        t[k] = _mm512_mask_mov_pd(next, keep, s[k]);
    }
    // Insert x: d[j] = std::max(std::min(t[j], x), t[j-1]) with the same operand order as
    // replace_sorted: vminpd(a, b) is a < b ? a : b, so std::min(t, x) = x < t ? x : t is
    // vminpd(x, t), and std::max(m, p) = m < p ? p : m is vmaxpd(p, m).
    for (int k = 0; k < K; ++k) {
        const __m512d below = k > 0 ? t[k - 1] : neg_inf;
        const __m512d prev = _mm512_castsi512_pd(
            _mm512_alignr_epi64(_mm512_castpd_si512(t[k]), _mm512_castpd_si512(below), L - 1));
        s[k] = _mm512_max_pd(prev, _mm512_min_pd(x, t[k]));
    }
}

template <int K>
AGENT_AVX512 double median_avx512(const __m512d (&s)[K], bool odd) {
    const double hi = _mm_cvtsd_f64(_mm512_castpd512_pd128(s[K / 2]));
    if (odd) return hi;
    const double lo = _mm_cvtsd_f64(
        _mm512_castpd512_pd128(_mm512_permutexvar_pd(_mm512_set1_epi64(7), s[K / 2 - 1])));
    return lo / 2 + hi / 2;
}

template <int K>
__attribute__((target("avx512f"))) void median_run_avx512(double* sorted, std::size_t window,
                                                           double* ring, std::size_t& head,
                                                           const double* in, std::size_t n,
                                                           double* out) {
    constexpr int L = 8;
    alignas(64) double lanes[K * L];
    to_lanes(sorted, window, lanes, K * L);
    __m512d s[K];
    for (int k = 0; k < K; ++k) s[k] = _mm512_load_pd(lanes + k * L);
    const bool odd = window % 2 == 1;
    const std::size_t from_ring = std::min(n, window);
    for (std::size_t i = 0, j = head; i < from_ring; ++i, j = j + 1 == window ? 0 : j + 1) {
        replace_avx512(s, _mm512_set1_pd(in[i]), _mm512_set1_pd(ring[j]));
        out[i] = median_avx512(s, odd);
    }
    for (std::size_t i = from_ring; i < n; ++i) {
        replace_avx512(s, _mm512_set1_pd(in[i]), _mm512_set1_pd(in[i - window]));
        out[i] = median_avx512(s, odd);
    }
    for (int k = 0; k < K; ++k) _mm512_store_pd(lanes + k * L, s[k]);
    from_lanes(lanes, K * L, window, sorted);
    advance_ring(ring, window, head, in, n);
}

#undef AGENT_AVX512

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// -----------------------------------------------------------------------------------------
// AVX2: four doubles a vector. A shift by one lane across two vectors is a 128-bit
// permute and an in-lane shuffle; the selection a compare and a blend.

#define AGENT_AVX2 __attribute__((target("avx2"), always_inline)) inline

template <int K>
AGENT_AVX2 void replace_avx2(__m256d (&s)[K], __m256d x, __m256d oldest) {
    const __m256d pos_inf = _mm256_set1_pd(std::numeric_limits<double>::infinity());
    const __m256d neg_inf = _mm256_set1_pd(-std::numeric_limits<double>::infinity());
    __m256d t[K];
    for (int k = 0; k < K; ++k) {
        const __m256d above = k + 1 < K ? s[k + 1] : pos_inf;
        // [s2, s3, a0, a1], then [s1, s2, s3, a0].
        const __m256d mid = _mm256_permute2f128_pd(s[k], above, 0x21);
        const __m256d next = _mm256_shuffle_pd(s[k], mid, 0x5);
        const __m256d keep = _mm256_cmp_pd(s[k], oldest, _CMP_LT_OQ);
        t[k] = _mm256_blendv_pd(next, s[k], keep);
    }
    for (int k = 0; k < K; ++k) {
        const __m256d below = k > 0 ? t[k - 1] : neg_inf;
        // [b2, b3, t0, t1], then [b3, t0, t1, t2].
        const __m256d mid = _mm256_permute2f128_pd(below, t[k], 0x21);
        const __m256d prev = _mm256_shuffle_pd(mid, t[k], 0x5);
        s[k] = _mm256_max_pd(prev, _mm256_min_pd(x, t[k]));  // as in replace_avx512
    }
}

template <int K>
AGENT_AVX2 double median_avx2(const __m256d (&s)[K], bool odd) {
    const double hi = _mm_cvtsd_f64(_mm256_castpd256_pd128(s[K / 2]));
    if (odd) return hi;
    const __m128d upper = _mm256_extractf128_pd(s[K / 2 - 1], 1);
    const double lo = _mm_cvtsd_f64(_mm_unpackhi_pd(upper, upper));
    return lo / 2 + hi / 2;
}

template <int K>
__attribute__((target("avx2"))) void median_run_avx2(double* sorted, std::size_t window,
                                                     double* ring, std::size_t& head,
                                                     const double* in, std::size_t n,
                                                     double* out) {
    constexpr int L = 4;
    alignas(32) double lanes[K * L];
    to_lanes(sorted, window, lanes, K * L);
    __m256d s[K];
    for (int k = 0; k < K; ++k) s[k] = _mm256_load_pd(lanes + k * L);
    const bool odd = window % 2 == 1;
    const std::size_t from_ring = std::min(n, window);
    for (std::size_t i = 0, j = head; i < from_ring; ++i, j = j + 1 == window ? 0 : j + 1) {
        replace_avx2(s, _mm256_set1_pd(in[i]), _mm256_set1_pd(ring[j]));
        out[i] = median_avx2(s, odd);
    }
    for (std::size_t i = from_ring; i < n; ++i) {
        replace_avx2(s, _mm256_set1_pd(in[i]), _mm256_set1_pd(in[i - window]));
        out[i] = median_avx2(s, odd);
    }
    for (int k = 0; k < K; ++k) _mm256_store_pd(lanes + k * L, s[k]);
    from_lanes(lanes, K * L, window, sorted);
    advance_ring(ring, window, head, in, n);
}

#undef AGENT_AVX2

// The kernel for a window. AVX-512 covers every window of the full pass (K <= 14 of 32 zmm
// registers); AVX2 stops at K = 12 of its 16 ymm registers (windows up to 48), beyond which
// spilling would eat the gain, and leaves larger windows to the portable pass.
static_assert(kernel_vectors(kFullPassMaxWindow, 8) <= 14, "extend avx512_kernel");

MedianRun avx512_kernel(std::size_t window) noexcept {
    switch (kernel_vectors(window, 8)) {
        case 2: return &median_run_avx512<2>;
        case 4: return &median_run_avx512<4>;
        case 6: return &median_run_avx512<6>;
        case 8: return &median_run_avx512<8>;
        case 10: return &median_run_avx512<10>;
        case 12: return &median_run_avx512<12>;
        case 14: return &median_run_avx512<14>;
        default: return nullptr;
    }
}

MedianRun avx2_kernel(std::size_t window) noexcept {
    switch (kernel_vectors(window, 4)) {
        case 2: return &median_run_avx2<2>;
        case 4: return &median_run_avx2<4>;
        case 6: return &median_run_avx2<6>;
        case 8: return &median_run_avx2<8>;
        case 10: return &median_run_avx2<10>;
        case 12: return &median_run_avx2<12>;
        default: return nullptr;
    }
}

#endif  // x86-64 with GCC or Clang

enum class Path { portable, avx2, avx512 };

constexpr const char* path_name(Path p) noexcept {
    return p == Path::avx512 ? "avx512" : p == Path::avx2 ? "avx2" : "portable";
}

bool cpu_can_run(Path p) noexcept {
#ifdef AGENT_X86_DISPATCH
    __builtin_cpu_init();  // cheap and idempotent; needed if we run before libgcc's own init
    if (p == Path::avx512) return __builtin_cpu_supports("avx512f");
    if (p == Path::avx2) return __builtin_cpu_supports("avx2");
#endif
    return p == Path::portable;
}

// Chosen on first use: the widest path the CPU supports.
std::atomic<Path>& current_path() noexcept {
    static std::atomic<Path> path{cpu_can_run(Path::avx512) ? Path::avx512
                                  : cpu_can_run(Path::avx2) ? Path::avx2
                                                            : Path::portable};
    return path;
}

// The kernel for this window on the current path, or nullptr for the portable pass.
MedianRun median_kernel(std::size_t window) noexcept {
#ifdef AGENT_X86_DISPATCH
    switch (current_path().load(std::memory_order_relaxed)) {
        case Path::avx512: return avx512_kernel(window);
        case Path::avx2: return avx2_kernel(window);
        case Path::portable: return nullptr;
    }
#endif
    (void)window;
    return nullptr;
}

}  // namespace

const char* simd_path() noexcept { return path_name(current_path().load()); }

std::vector<std::string> simd_paths() {
    std::vector<std::string> names;
    for (Path p : {Path::portable, Path::avx2, Path::avx512}) {
        if (cpu_can_run(p)) names.emplace_back(path_name(p));
    }
    return names;
}

bool set_simd_path(const std::string& name) {
    for (Path p : {Path::portable, Path::avx2, Path::avx512}) {
        if (name == path_name(p) && cpu_can_run(p)) {
            current_path().store(p);
            return true;
        }
    }
    return false;
}

void MedianFilter::replace(double oldest, double x) noexcept {
    if (window_ > kFullPassMaxWindow) {
        replace_sorted_in_place(buf_.data() + cur_ * stride_ + 1, window_, oldest, x);
        return;
    }
    replace_sorted(buf_.data() + cur_ * stride_ + 1, buf_.data() + (1 - cur_) * stride_ + 1,
                   padded_, oldest, x);
    cur_ = 1 - cur_;
}

double MedianFilter::step(double x) {
    allocate();
    if (ring_.size() < window_) {
        // Warm-up: insert after any equal values; the +inf padding beyond shifts along.
        ring_.push_back(x);
        double* s = buf_.data() + cur_ * stride_ + 1;
        const std::size_t n = ring_.size() - 1;
        double* at = std::upper_bound(s, s + n, x);
        std::copy_backward(at, s + n, s + n + 1);
        *at = x;
        return median();
    }
    const double oldest = ring_[head_];
    ring_[head_] = x;
    head_ = head_ + 1 == window_ ? 0 : head_ + 1;  // not %, which costs a division
    replace(oldest, x);
    return median();
}

double MedianFilter::update(double x) {
    require_finite("raw", x);
    return step(x);
}

void MedianFilter::update_many(const double* in, std::size_t n, double* out) {
    require_all_finite(in, n);
    std::size_t i = 0;
    for (; i < n && ring_.size() < window_; ++i) out[i] = step(in[i]);  // warm-up
    if (window_ > kFullPassMaxWindow) {
        for (; i < n; ++i) out[i] = step(in[i]);  // the in-place replacement: no loop to hoist
        return;
    }
    if (i == n) return;
    if (const MedianRun run = median_kernel(window_)) {  // AVX-512 / AVX2 on x86-64
        run(buf_.data() + cur_ * stride_ + 1, window_, ring_.data(), head_, in + i, n - i,
            out + i);
        return;
    }
    // Steady state: the same work as step(), with the bookkeeping hoisted out of the loop.
    const std::size_t mid = window_ / 2;
    const bool odd = window_ % 2 == 1;
    double* ring = ring_.data();
    std::size_t head = head_;
    double* s = buf_.data() + cur_ * stride_ + 1;        // the current sorted copy
    double* d = buf_.data() + (1 - cur_) * stride_ + 1;  // the other one
    for (; i < n; ++i) {
        const double x = in[i];
        const double oldest = ring[head];
        ring[head] = x;
        head = head + 1 == window_ ? 0 : head + 1;
        replace_sorted(s, d, padded_, oldest, x);
        std::swap(s, d);
        cur_ = 1 - cur_;
        out[i] = odd ? s[mid] : s[mid - 1] / 2 + s[mid] / 2;
    }
    head_ = head;
}

std::optional<double> MedianFilter::value() const noexcept {
    if (ring_.empty()) return std::nullopt;
    return median();
}

void MedianFilter::reset() noexcept {
    ring_.clear();
    head_ = 0;
    if (buf_.empty()) return;
    double* s = buf_.data() + cur_ * stride_ + 1;
    std::fill(s, s + padded_ + 1, std::numeric_limits<double>::infinity());
}

std::vector<double> MedianFilter::samples() const {
    std::vector<double> out;
    out.reserve(ring_.size());
    out.insert(out.end(), ring_.begin() + static_cast<std::ptrdiff_t>(head_), ring_.end());
    out.insert(out.end(), ring_.begin(), ring_.begin() + static_cast<std::ptrdiff_t>(head_));
    return out;
}

void MedianFilter::set_samples(const std::vector<double>& samples) {
    for (std::size_t i = 0; i < samples.size(); ++i) {
        if (!std::isfinite(samples[i])) {
            throw InvalidValue("samples[" + std::to_string(i) + "]", "must be finite",
                               samples[i]);
        }
    }
    const std::size_t keep = std::min(samples.size(), window_);
    std::vector<double> ring(samples.end() - static_cast<std::ptrdiff_t>(keep), samples.end());
    allocate();
    double* s = buf_.data() + cur_ * stride_ + 1;
    std::copy(ring.begin(), ring.end(), s);
    std::stable_sort(s, s + keep);  // stable, like Python's sorted(): -0.0 and 0.0 keep order
    std::fill(s + keep, s + padded_ + 1, std::numeric_limits<double>::infinity());
    ring_ = std::move(ring);
    ring_.reserve(window_);
    head_ = 0;
}

// ---------------------------------------------------------------------------------------
// OneEuroFilter

OneEuroFilter::OneEuroFilter(double min_cutoff, double beta, double d_cutoff, double dt)
    : min_cutoff_(min_cutoff),
      beta_(beta),
      d_cutoff_(d_cutoff),
      dt_(dt),
      inv_dt_(0.0),
      two_pi_dt_(0.0),
      alpha_d_(0.0) {
    require_positive("min_cutoff", min_cutoff);
    require_non_negative("beta", beta);
    require_positive("d_cutoff", d_cutoff);
    require_positive("dt", dt);
    inv_dt_ = 1.0 / dt;
    two_pi_dt_ = 2.0 * kPi * dt;
    alpha_d_ = smoothing(d_cutoff);
}

// dt / (dt + 1/(2*pi*fc)), multiplied through by 2*pi*fc: one division instead of two.
// agent/filters.py writes it the same way so that both round identically.
double OneEuroFilter::smoothing(double cutoff) const noexcept {
    const double t = two_pi_dt_ * cutoff;
    return t / (t + 1.0);
}

double OneEuroFilter::step(double x) noexcept {
    if (!state_) {
        state_ = State{x, 0.0, x};
        return x;
    }
    State s = *state_;
    const double dx = (x - s.x) * inv_dt_;
    s.dx += alpha_d_ * (dx - s.dx);
    const double cutoff = min_cutoff_ + beta_ * std::fabs(s.dx);
    s.y += smoothing(cutoff) * (x - s.y);
    s.x = x;
    state_ = s;
    return s.y;
}

double OneEuroFilter::update(double x) {
    require_finite("raw", x);
    return step(x);
}

void OneEuroFilter::update_many(const double* in, std::size_t n, double* out) {
    require_all_finite(in, n);
    if (n == 0) return;
    std::size_t i = 0;
    if (!state_) out[i++] = step(in[0]);
    // The same arithmetic as step(), bit for bit, on locals kept in registers. Only dx_hat and
    // y carry from one sample to the next; the derivative, the cutoff and the division for
    // alpha of sample i+1 do not wait for y_i, so the CPU overlaps consecutive samples.
    double y = state_->y;
    double dx_hat = state_->dx;
    double x_prev = state_->x;
    const double inv_dt = inv_dt_;
    const double two_pi_dt = two_pi_dt_;
    const double alpha_d = alpha_d_;
    const double min_cutoff = min_cutoff_;
    const double beta = beta_;
    for (; i < n; ++i) {
        const double x = in[i];
        const double dx = (x - x_prev) * inv_dt;
        dx_hat += alpha_d * (dx - dx_hat);
        const double t = two_pi_dt * (min_cutoff + beta * std::fabs(dx_hat));
        y += t / (t + 1.0) * (x - y);
        out[i] = y;
        x_prev = x;
    }
    state_ = State{y, dx_hat, x_prev};
}

std::optional<double> OneEuroFilter::value() const noexcept {
    if (!state_) return std::nullopt;
    return state_->y;
}

void OneEuroFilter::set_state(std::optional<State> state) {
    if (state) {
        require_finite("y", state->y);
        require_finite("dx", state->dx);
        require_finite("x", state->x);
    }
    state_ = state;
}

}  // namespace agent
