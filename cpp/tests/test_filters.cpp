// Unit tests of the C++ filter core, run by ctest. No framework: CHECK reports file:line and
// the test exits non-zero at the end if anything failed.
#include "filters.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

int failures = 0;
int checks = 0;

#define CHECK(cond)                                                               \
    do {                                                                          \
        ++checks;                                                                 \
        if (!(cond)) {                                                            \
            ++failures;                                                           \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                         \
    } while (0)

#define CHECK_NEAR(a, b)                                                              \
    do {                                                                              \
        ++checks;                                                                     \
        const double a_ = (a), b_ = (b);                                              \
        if (!(std::fabs(a_ - b_) <= 1e-12 * std::fmax(1.0, std::fabs(b_)))) {         \
            ++failures;                                                               \
            std::fprintf(stderr, "%s:%d: %s = %.17g, expected %.17g\n", __FILE__, __LINE__, \
                         #a, a_, b_);                                                 \
        }                                                                             \
    } while (0)

// Runs f, expects an exception of type E whose what() contains `needle`.
template <class E, class F>
void check_throws(const char* file, int line, F f, const std::string& needle) {
    ++checks;
    try {
        f();
    } catch (const E& e) {
        if (std::string(e.what()).find(needle) == std::string::npos) {
            ++failures;
            std::fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", file, line, e.what(),
                         needle.c_str());
        }
        return;
    } catch (...) {
        ++failures;
        std::fprintf(stderr, "%s:%d: wrong exception type\n", file, line);
        return;
    }
    ++failures;
    std::fprintf(stderr, "%s:%d: nothing thrown, expected \"%s\"\n", file, line, needle.c_str());
}
#define CHECK_THROWS(E, expr, needle) check_throws<E>(__FILE__, __LINE__, [&] { expr; }, needle)

const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

void test_format_double() {
    CHECK(agent::format_double(0.1) == "0.1");
    CHECK(agent::format_double(-1.0) == "-1");
    CHECK(agent::format_double(kNan) == "nan");
    CHECK(agent::format_double(-kInf) == "-inf");
}

void test_pt1() {
    agent::Pt1Filter f(1.0, 1.0);  // alpha = 0.5
    CHECK_NEAR(f.alpha(), 0.5);
    CHECK(!f.value());
    CHECK_NEAR(f.update(10.0), 10.0);  // seeds
    CHECK_NEAR(f.update(20.0), 15.0);
    CHECK_NEAR(f.update(20.0), 17.5);
    CHECK_NEAR(*f.value(), 17.5);
    CHECK_THROWS(agent::InvalidValue, f.update(kNan), "raw must be finite, got nan");
    CHECK_NEAR(*f.value(), 17.5);  // unchanged by the rejected sample
    f.reset();
    CHECK(!f.value());
    CHECK_NEAR(f.update(3.0), 3.0);

    agent::Pt1Filter g(3.0, 1.0);  // alpha = 0.25
    const std::vector<double> in{4.0, 8.0, 0.0};
    std::vector<double> out(in.size());
    g.update_many(in.data(), in.size(), out.data());
    CHECK_NEAR(out[0], 4.0);
    CHECK_NEAR(out[1], 5.0);
    CHECK_NEAR(out[2], 3.75);

    const std::vector<double> bad{1.0, kInf};
    CHECK_THROWS(agent::InvalidValue, g.update_many(bad.data(), 2, out.data()),
                 "values[1] must be finite, got inf");
    CHECK_NEAR(*g.value(), 3.75);

    CHECK_THROWS(agent::InvalidValue, agent::Pt1Filter(-1.0, 1.0),
                 "tau must be a finite number > 0, got -1");
    CHECK_THROWS(agent::InvalidValue, agent::Pt1Filter(1.0, 0.0),
                 "dt must be a finite number > 0, got 0");
    CHECK_THROWS(agent::InvalidValue, agent::Pt1Filter(kNan, 1.0), "tau must be");

    agent::Pt1Filter h(1.0, 1.0);
    h.set_state(*g.state());
    CHECK_NEAR(h.update(5.75), 4.75);
    CHECK_THROWS(agent::InvalidValue, h.set_state(kInf), "y must be finite");
    CHECK_NEAR(*h.value(), 4.75);
    h.set_state(std::nullopt);
    CHECK(!h.value());
}

void test_median() {
    agent::MedianFilter f(3);
    CHECK(!f.value());
    CHECK_NEAR(f.update(5.0), 5.0);
    CHECK_NEAR(f.update(1.0), 3.0);  // warm-up, even count: mean of the middle two
    CHECK_NEAR(f.update(9.0), 5.0);
    CHECK_NEAR(f.update(2.0), 2.0);   // window {1, 9, 2}
    CHECK_NEAR(f.update(2.0), 2.0);   // {9, 2, 2}
    CHECK_NEAR(f.update(10.0), 2.0);  // {2, 2, 10}
    CHECK_NEAR(f.update(11.0), 10.0); // {2, 10, 11}
    const std::vector<double> s = f.samples();
    CHECK(s == (std::vector<double>{2.0, 10.0, 11.0}));

    agent::MedianFilter even(4);
    const std::vector<double> in{4.0, 1.0, 3.0, 2.0, 100.0};
    std::vector<double> out(in.size());
    even.update_many(in.data(), in.size(), out.data());
    CHECK_NEAR(out[0], 4.0);
    CHECK_NEAR(out[1], 2.5);
    CHECK_NEAR(out[2], 3.0);
    CHECK_NEAR(out[3], 2.5);
    CHECK_NEAR(out[4], 2.5);  // {1, 3, 2, 100}

    // Restoring into a smaller window keeps the newest samples.
    agent::MedianFilter small(2);
    small.set_samples(even.samples());
    CHECK(small.samples() == (std::vector<double>{2.0, 100.0}));
    CHECK_NEAR(*small.value(), 51.0);
    CHECK_NEAR(small.update(0.0), 50.0);  // {100, 0}

    CHECK_THROWS(agent::InvalidValue, small.set_samples({1.0, kNan}),
                 "samples[1] must be finite, got nan");
    CHECK(small.samples() == (std::vector<double>{100.0, 0.0}));
    CHECK_THROWS(std::invalid_argument, agent::MedianFilter(0),
                 "window must be an integer >= 1, got 0");

    // Huge values: the mean of the two middle values must not overflow.
    agent::MedianFilter big(2);
    big.update(1e308);
    CHECK_NEAR(big.update(1e308), 1e308);

    f.reset();
    CHECK(!f.value());
    CHECK(f.samples().empty());
    CHECK_NEAR(f.update(7.0), 7.0);
}

void test_median_against_brute_force() {
    // A long pseudo-random stream with many ties: the incremental median must match a sort.
    unsigned state = 12345;
    for (std::size_t w : {1u, 2u, 5u, 8u, 31u}) {
        agent::MedianFilter f(w);
        std::vector<double> seen;
        for (int i = 0; i < 2000; ++i) {
            state = state * 1103515245u + 12345u;
            const double x = static_cast<double>((state >> 16) % 17) - 8.0;
            seen.push_back(x);
            const std::size_t n = std::min(seen.size(), w);
            std::vector<double> win(seen.end() - static_cast<std::ptrdiff_t>(n), seen.end());
            std::sort(win.begin(), win.end());
            const double expected =
                n % 2 ? win[n / 2] : win[n / 2 - 1] / 2 + win[n / 2] / 2;
            CHECK_NEAR(f.update(x), expected);
        }
    }
}

void test_one_euro() {
    // dt = 1, min_cutoff = d_cutoff = 1/(2*pi): alpha(1/(2*pi)) = 1 / (1 + 1) = 0.5.
    const double c = 1.0 / (2.0 * 3.141592653589793);
    agent::OneEuroFilter f(c, 0.0, c, 1.0);
    CHECK(!f.value());
    CHECK_NEAR(f.update(10.0), 10.0);
    CHECK_NEAR(f.update(20.0), 15.0);  // beta = 0: a plain low-pass with alpha 0.5
    CHECK_NEAR(f.state()->dx, 5.0);    // dx = (20 - 10)/1, dx_hat = 0 + 0.5*(10 - 0)

    // beta > 0: cutoff = c + beta*|dx_hat|; choose beta so that the cutoff is 2/(2*pi)
    // after the second sample: dx_hat = 5, so beta = c/5 -> alpha = 1/(1 + 1/2) = 2/3.
    agent::OneEuroFilter g(c, c / 5.0, c, 1.0);
    g.update(10.0);
    CHECK_NEAR(g.update(20.0), 10.0 + (2.0 / 3.0) * 10.0);

    CHECK_THROWS(agent::InvalidValue, f.update(-kInf), "raw must be finite, got -inf");
    CHECK_NEAR(*f.value(), 15.0);
    CHECK_THROWS(agent::InvalidValue, agent::OneEuroFilter(1.0, -0.5),
                 "beta must be a finite number >= 0, got -0.5");
    CHECK_THROWS(agent::InvalidValue, agent::OneEuroFilter(0.0), "min_cutoff must be");
    CHECK_THROWS(agent::InvalidValue, agent::OneEuroFilter(1.0, 0.0, kInf), "d_cutoff must be");
    CHECK_THROWS(agent::InvalidValue, agent::OneEuroFilter(1.0, 0.0, 1.0, -2.0), "dt must be");

    // State round trip mid-stream, then both continue identically.
    agent::OneEuroFilter a(1.0, 0.1, 1.0, 0.01), b(1.0, 0.1, 1.0, 0.01);
    for (double x : {1.0, 3.0, 2.0, 8.0}) a.update(x);
    b.set_state(a.state());
    for (double x : {4.0, -2.0, 0.5}) CHECK(a.update(x) == b.update(x));
    CHECK_THROWS(agent::InvalidValue, b.set_state(agent::OneEuroFilter::State{1.0, kNan}),
                 "dx must be finite");
    b.reset();
    CHECK(!b.value());
}

}  // namespace

int main() {
    test_format_double();
    test_pt1();
    test_median();
    test_median_against_brute_force();
    test_one_euro();
    std::printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
