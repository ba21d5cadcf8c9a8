#include "filters.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <system_error>

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
// writing the result to the other copy d. Every element is computed from its neighbours, with
// no data-dependent branch inside the loop, so it vectorises (two doubles per SSE2/NEON op):
//
//   x >= oldest: from the first copy of `oldest` up to x, the values slide down one place and
//     x takes the last freed place; below `oldest` nothing moves:
//       d[i] = s[i] < oldest ? s[i] : min(s[i+1], max(s[i], x))
//   x < oldest: mirrored; values between x and the last copy of `oldest` slide up one place:
//       d[i] = s[i] > oldest ? s[i] : max(s[i-1], min(s[i], x))
//
// (min(s[i+1], max(s[i], x)) is s[i+1] while s[i+1] <= x, x at the boundary, s[i] above it.)
// Values are only moved, never computed, so the result is exactly the new sorted multiset
// (up to the sign of a zero: min/max may hand back 0.0 for -0.0, which compares equal).
// The +inf padding stays +inf and the -inf sentinel is never written.
//
// s and d never overlap (__restrict, a GCC/Clang/MSVC extension, spares the vectoriser a
// run-time overlap check); m is the padded length.
inline void replace_sorted(const double* __restrict s, double* __restrict d, std::size_t m,
                           double oldest, double x) noexcept {
    if (x >= oldest) {
        for (std::size_t i = 0; i < m; ++i) {
            const double b = s[i];
            const double moved = std::min(s[i + 1], std::max(b, x));
            d[i] = b < oldest ? b : moved;
        }
    } else {
        for (std::size_t i = 0; i < m; ++i) {
            const double b = s[i];
            const double moved = std::max(s[i - 1], std::min(b, x));
            d[i] = b > oldest ? b : moved;
        }
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

}  // namespace

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
    std::sort(s, s + keep);
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
