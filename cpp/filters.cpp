#include "filters.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
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
    // The same arithmetic as step(), on a local so the compiler keeps y in a register.
    double y = *y_;
    const double a = alpha_;
    for (; i < n; ++i) {
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

MedianFilter::MedianFilter(std::size_t window) : window_(window) {
    if (window < 1) {
        throw std::invalid_argument("window must be an integer >= 1, got " +
                                    std::to_string(window));
    }
}

double MedianFilter::median() const noexcept {
    const std::size_t n = sorted_.size();
    const std::size_t mid = n / 2;
    if (n % 2 == 1) return sorted_[mid];
    // Halving is exact, so a/2 + b/2 equals (a + b)/2 rounded once, without its overflow.
    return sorted_[mid - 1] / 2 + sorted_[mid] / 2;
}

namespace {

// Index of the first element >= v in the ascending s[0..n): a branch-free binary search, as
// sensor noise makes the branches of std::lower_bound unpredictable.
std::size_t lower_bound_index(const double* s, std::size_t n, double v) noexcept {
    if (n == 0) return 0;
    const double* base = s;
    while (n > 1) {
        const std::size_t half = n / 2;
        base = (base[half] < v) ? base + half : base;
        n -= half;
    }
    return static_cast<std::size_t>(base - s) + (*base < v);
}

}  // namespace

double MedianFilter::step(double x) {
    if (ring_.size() < window_) {
        ring_.push_back(x);
        sorted_.insert(std::upper_bound(sorted_.begin(), sorted_.end(), x), x);
        return median();
    }
    const double oldest = ring_[head_];
    ring_[head_] = x;
    head_ = (head_ + 1) % window_;
    // Replace the oldest sample by x in one pass: the first copy of `oldest` leaves, x slides
    // to the end of its run of equals (as erase + upper_bound insert would put it), and only
    // the values between the two move by one place.
    double* s = sorted_.data();
    const std::size_t n = sorted_.size();
    std::size_t j = lower_bound_index(s, n, oldest);
    if (x >= oldest) {
        while (j + 1 < n && s[j + 1] <= x) {
            s[j] = s[j + 1];
            ++j;
        }
    } else {
        while (j > 0 && s[j - 1] > x) {
            s[j] = s[j - 1];
            --j;
        }
    }
    s[j] = x;
    return median();
}

double MedianFilter::update(double x) {
    require_finite("raw", x);
    return step(x);
}

void MedianFilter::update_many(const double* in, std::size_t n, double* out) {
    require_all_finite(in, n);
    for (std::size_t i = 0; i < n; ++i) out[i] = step(in[i]);
}

std::optional<double> MedianFilter::value() const noexcept {
    if (sorted_.empty()) return std::nullopt;
    return median();
}

void MedianFilter::reset() noexcept {
    ring_.clear();
    sorted_.clear();
    head_ = 0;
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
    std::vector<double> sorted = ring;
    std::sort(sorted.begin(), sorted.end());
    ring_ = std::move(ring);
    sorted_ = std::move(sorted);
    head_ = 0;
}

// ---------------------------------------------------------------------------------------
// OneEuroFilter

OneEuroFilter::OneEuroFilter(double min_cutoff, double beta, double d_cutoff, double dt)
    : min_cutoff_(min_cutoff), beta_(beta), d_cutoff_(d_cutoff), dt_(dt), alpha_d_(0.0) {
    require_positive("min_cutoff", min_cutoff);
    require_non_negative("beta", beta);
    require_positive("d_cutoff", d_cutoff);
    require_positive("dt", dt);
    alpha_d_ = smoothing(d_cutoff);
}

double OneEuroFilter::smoothing(double cutoff) const noexcept {
    return dt_ / (dt_ + 1.0 / (2.0 * kPi * cutoff));
}

double OneEuroFilter::step(double x) noexcept {
    if (!state_) {
        state_ = State{x, 0.0};
        return x;
    }
    State s = *state_;
    const double dx = (x - s.y) / dt_;
    s.dx += alpha_d_ * (dx - s.dx);
    const double cutoff = min_cutoff_ + beta_ * std::fabs(s.dx);
    s.y += smoothing(cutoff) * (x - s.y);
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
    // The same arithmetic as step(), on locals kept in registers.
    double y = state_->y;
    double dx_hat = state_->dx;
    for (; i < n; ++i) {
        const double x = in[i];
        const double dx = (x - y) / dt_;
        dx_hat += alpha_d_ * (dx - dx_hat);
        const double cutoff = min_cutoff_ + beta_ * std::fabs(dx_hat);
        y += smoothing(cutoff) * (x - y);
        out[i] = y;
    }
    state_ = State{y, dx_hat};
}

std::optional<double> OneEuroFilter::value() const noexcept {
    if (!state_) return std::nullopt;
    return state_->y;
}

void OneEuroFilter::set_state(std::optional<State> state) {
    if (state) {
        require_finite("y", state->y);
        require_finite("dx", state->dx);
    }
    state_ = state;
}

}  // namespace agent
