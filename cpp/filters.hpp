// Signal filters for sensor readings: PT1 low-pass, sliding-window median, and the 1€ filter.
//
// This is the plain C++ core: it knows nothing of Python (cpp/bindings.cpp wraps it as
// agent._filters). Every filter follows the same contract as agent.Filter:
//
//   * the first update() seeds the state and returns the raw value unchanged;
//   * value() is empty before the first update, reset() returns to that state;
//   * a non-finite input throws InvalidValue and leaves the state unchanged;
//   * update_many() validates the whole batch first (all-or-nothing), then runs it.
//
// Not thread-safe: a filter holds one stream of state, so use one filter per device thread.
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace agent {

// A value broke a rule. It keeps its parts so that a wrapper (the Python binding) can re-word
// the message in its own number format: what() reads "<subject> <requirement>, got <value>",
// e.g. "tau must be a finite number > 0, got -1".
class InvalidValue : public std::invalid_argument {
public:
    InvalidValue(std::string subject, std::string requirement, double got);
    const std::string& subject() const noexcept { return subject_; }
    const std::string& requirement() const noexcept { return requirement_; }
    double got() const noexcept { return got_; }

private:
    std::string subject_;
    std::string requirement_;
    double got_;
};

// The shortest decimal text that reads back as the same double ("0.1", "1e+300", "inf").
std::string format_double(double x);

// First-order low-pass: alpha = dt / (tau + dt); y += alpha * (x - y).
// update() does exactly that; update_many() takes two samples per step in a shorter
// arithmetic chain (see filters.cpp), which agrees with update() to a few ulps and keeps a
// constant input exactly constant.
class Pt1Filter {
public:
    Pt1Filter(double tau, double dt);  // both finite and > 0, else InvalidValue

    double update(double x);
    void update_many(const double* in, std::size_t n, double* out);
    std::optional<double> value() const noexcept { return y_; }
    void reset() noexcept { y_.reset(); }

    // State round trip: the filtered value, empty before seeding.
    std::optional<double> state() const noexcept { return y_; }
    void set_state(std::optional<double> y);  // InvalidValue("y", ...) if non-finite

    double tau() const noexcept { return tau_; }
    double dt() const noexcept { return dt_; }
    double alpha() const noexcept { return alpha_; }

private:
    double step(double x) noexcept;
    double tau_;
    double dt_;
    double alpha_;
    std::optional<double> y_;
};

// Median of the last `window` samples (mean of the two middle ones for an even count; during
// warm-up, of the samples seen so far). A ring keeps arrival order and a sorted copy of the
// window is kept up to date, never re-sorted: during warm-up by binary-search insertion, then
// by replacing the oldest sample with the new one: for windows up to 100 in one branch-free
// pass over the sorted copy, which the compiler vectorises (replace_sorted in filters.cpp),
// for larger ones by two binary searches and a memmove of the values between the two
// positions. O(window) per sample at most. On x86-64, update_many runs that pass with AVX-512
// or AVX2 when the CPU has them (see simd_path below); every path gives the same bits.
class MedianFilter {
public:
    explicit MedianFilter(std::size_t window);  // window >= 1, else std::invalid_argument

    double update(double x);
    void update_many(const double* in, std::size_t n, double* out);
    std::optional<double> value() const noexcept;
    void reset() noexcept;

    // State round trip: the samples in the window, oldest first. Restoring more samples than
    // the window holds keeps the newest ones.
    std::vector<double> samples() const;
    void set_samples(const std::vector<double>& samples);  // InvalidValue("samples[i]", ...)

    std::size_t window() const noexcept { return window_; }

private:
    double step(double x);
    void replace(double oldest, double x) noexcept;
    double median() const noexcept;
    void allocate();
    const double* sorted() const noexcept { return buf_.data() + cur_ * stride_ + 1; }

    std::size_t window_;
    std::size_t padded_;          // window_ rounded up to even: whole vectors of two doubles
    std::size_t stride_;          // padded_ + 2: one sorted copy with its two sentinels
    std::vector<double> ring_;    // arrival order; grows to window_, then wraps at head_
    std::size_t head_ = 0;        // index of the oldest sample once the ring is full
    // Sorted copies of the window, each laid out as [-inf, s0 .. s(n-1), +inf ...]: two for
    // the full pass, which reads copy cur_ and writes the other one; one for large windows.
    // Allocated on first use, so an idle filter with a huge window costs nothing.
    std::vector<double> buf_;
    std::size_t cur_ = 0;
};

// The 1€ filter (Casiez, Roussel, Vogel, CHI 2012) with a fixed sampling period dt:
//   alpha(fc) = dt / (dt + 1 / (2*pi*fc))  -- computed as t / (t + 1), t = 2*pi*dt*fc
//   dx     = (x - x_prev) / dt            -- x_prev is the previous *raw* sample, as in
//                                            Casiez's OneEuroFilter.cc/.py (lastValue())
//   dx_hat += alpha(d_cutoff) * (dx - dx_hat)
//   fc     = min_cutoff + beta * |dx_hat|
//   y      += alpha(fc) * (x - y)
// The first update seeds y = x_prev = x and dx_hat = 0. Because dx, dx_hat, fc and alpha
// depend only on the raw samples, consecutive samples overlap in the CPU: the only chains
// from one sample to the next are the short updates of dx_hat and of y.
class OneEuroFilter {
public:
    struct State {
        double y;   // the filtered value
        double dx;  // the smoothed derivative dx_hat
        double x;   // the previous raw sample
    };

    OneEuroFilter(double min_cutoff = 1.0, double beta = 0.0, double d_cutoff = 1.0,
                  double dt = 1.0);

    double update(double x);
    void update_many(const double* in, std::size_t n, double* out);
    std::optional<double> value() const noexcept;
    void reset() noexcept { state_.reset(); }

    std::optional<State> state() const noexcept { return state_; }
    // InvalidValue("y"/"dx"/"x", ...) if any is non-finite.
    void set_state(std::optional<State> state);

    double min_cutoff() const noexcept { return min_cutoff_; }
    double beta() const noexcept { return beta_; }
    double d_cutoff() const noexcept { return d_cutoff_; }
    double dt() const noexcept { return dt_; }

private:
    double step(double x) noexcept;
    double smoothing(double cutoff) const noexcept;
    double min_cutoff_;
    double beta_;
    double d_cutoff_;
    double dt_;
    // Constants of the per-sample arithmetic, so that a sample costs one division (in alpha).
    double inv_dt_;     // 1 / dt
    double two_pi_dt_;  // 2*pi*dt
    double alpha_d_;    // alpha(d_cutoff)
    std::optional<State> state_;
};

// Internal: which code runs MedianFilter::update_many's per-sample pass (windows up to 100).
//
// Like numpy, the package is compiled for baseline x86-64 (SSE2) and arm64 (NEON), and on
// x86-64 with GCC or Clang it also carries AVX2 and AVX-512 versions of that one pass, compiled
// with function-level target attributes. The widest one the running CPU supports is chosen
// once, on first use (__builtin_cpu_supports, which also checks that the OS saves the wide
// registers). All paths move the same values by the same rules, so their results are
// identical bit for bit; forcing a path exists for tests and benchmarks only. The Python
// module sets "portable" at import when AGENT_FILTERS_NO_SIMD=1 is in the environment.
//
// Not for use while another thread is filtering: a filter does not lock it.
const char* simd_path() noexcept;                  // "avx512", "avx2" or "portable"
std::vector<std::string> simd_paths();             // what this CPU can run, "portable" first
bool set_simd_path(const std::string& name);       // false (nothing changes) if not in simd_paths()

}  // namespace agent
