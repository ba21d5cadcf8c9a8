// Unit tests of the C++ filter core, run by ctest. No framework: CHECK reports file:line and
// the test exits non-zero at the end if anything failed.
#include "filters.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
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

    // update_many takes four samples per step in delta form. With alpha = 1/2 every
    // coefficient is a power of two and the arithmetic is exact: from the seed 0 with
    // d = 16, 16, 16, 16: e1 = 8, e2 = 16/4 + 16/2 = 12, e3 = 16/8 + 16/4 + 16/2 = 14,
    // e4 = (16/16 + 16/8) + (16/4 + 16/2) = 15; the sixth sample goes alone: 15 + (0-15)/2.
    agent::Pt1Filter q(1.0, 1.0);
    const std::vector<double> steps{0.0, 16.0, 16.0, 16.0, 16.0, 0.0};
    std::vector<double> qout(steps.size());
    q.update_many(steps.data(), steps.size(), qout.data());
    CHECK(qout == (std::vector<double>{0.0, 8.0, 12.0, 14.0, 15.0, 7.5}));

    agent::Pt1Filter h(1.0, 1.0);
    h.set_state(*g.state());
    CHECK_NEAR(h.update(5.75), 4.75);
    CHECK_THROWS(agent::InvalidValue, h.set_state(kInf), "y must be finite");
    CHECK_NEAR(*h.value(), 4.75);
    h.set_state(std::nullopt);
    CHECK(!h.value());
}

void test_pt1_batch_against_update() {
    // Four per step in update_many, one by one in update: a few ulps apart at most, and a
    // constant input stays exactly constant in both.
    unsigned state = 777;
    std::vector<double> xs;
    for (int i = 0; i < 1001; ++i) {
        state = state * 1103515245u + 12345u;
        xs.push_back(static_cast<double>(state >> 8) / 65536.0 - 128.0);
    }
    agent::Pt1Filter one(0.45, 0.1), batch(0.45, 0.1);
    std::vector<double> out(xs.size());
    batch.update_many(xs.data(), xs.size(), out.data());
    for (std::size_t i = 0; i < xs.size(); ++i) {
        const double y = one.update(xs[i]);
        ++checks;
        if (!(std::fabs(out[i] - y) <= 1e-12 * 256.0)) {
            ++failures;
            std::fprintf(stderr, "pt1 batch[%zu] = %.17g, update %.17g\n", i, out[i], y);
        }
    }

    const double c = 0.1 + 0.2;
    agent::Pt1Filter k(0.3, 0.07);
    const std::vector<double> cs(9, c);
    std::vector<double> cout(cs.size());
    k.update_many(cs.data(), cs.size(), cout.data());
    CHECK(cout == cs);
    CHECK(k.update(c) == c);
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
    // A long pseudo-random stream with many ties: the incremental median must match a sort,
    // through update and update_many alike, and again after a reset.
    unsigned state = 12345;
    // 100 and 101 straddle the switch from the full pass to the in-place replacement.
    for (std::size_t w : {1u, 2u, 3u, 5u, 8u, 31u, 32u, 100u, 101u, 256u}) {
        agent::MedianFilter f(w), g(w);
        for (int round = 0; round < 2; ++round) {
            std::vector<double> seen;
            for (int i = 0; i < 2000; ++i) {
                state = state * 1103515245u + 12345u;
                seen.push_back(static_cast<double>((state >> 16) % 17) - 8.0);
            }
            std::vector<double> batch(seen.size());
            g.update_many(seen.data(), seen.size(), batch.data());
            for (std::size_t i = 0; i < seen.size(); ++i) {
                const std::size_t n = std::min(i + 1, w);
                std::vector<double> win(seen.begin() + static_cast<std::ptrdiff_t>(i + 1 - n),
                                        seen.begin() + static_cast<std::ptrdiff_t>(i + 1));
                std::sort(win.begin(), win.end());
                const double expected =
                    n % 2 ? win[n / 2] : win[n / 2 - 1] / 2 + win[n / 2] / 2;
                CHECK(f.update(seen[i]) == expected);
                CHECK(batch[i] == expected);
            }
            CHECK(f.samples() == g.samples());
            f.reset();
            g.reset();
        }
    }
}

std::uint64_t bits(double x) {
    std::uint64_t b;
    std::memcpy(&b, &x, sizeof b);
    return b;
}

// The median of the Python reference, step by step: the sorted window as a list, the oldest
// removed at its first copy (bisect_left), the new value inserted after its equals (insort).
struct BisectMedian {
    std::size_t window;
    std::vector<double> ring, sorted;
    std::size_t head = 0;

    double update(double x) {
        if (ring.size() == window) {
            const double oldest = ring[head];
            ring[head] = x;
            head = (head + 1) % window;
            sorted.erase(std::lower_bound(sorted.begin(), sorted.end(), oldest));
        } else {
            ring.push_back(x);
        }
        sorted.insert(std::upper_bound(sorted.begin(), sorted.end(), x), x);
        const std::size_t n = sorted.size();
        return n % 2 ? sorted[n / 2] : sorted[n / 2 - 1] / 2 + sorted[n / 2] / 2;
    }
};

void test_median_simd_paths() {
    // Every dispatch path this CPU has (portable, and on x86-64 AVX2/AVX-512 where present)
    // must give the reference's results bit for bit: for every window of the full pass and
    // the first of the in-place one, in batches of many sizes (shorter than the window, so
    // a kernel finds the replaced values in the ring, and longer), with ties and signed zeros.
    const std::vector<std::string> paths = agent::simd_paths();
    CHECK(!paths.empty() && paths.front() == "portable");
    const std::string original = agent::simd_path();
    CHECK(std::find(paths.begin(), paths.end(), original) != paths.end());
    CHECK(!agent::set_simd_path("sse9"));
    CHECK(agent::simd_path() == original);  // a refused name changes nothing
    std::printf("median paths on this CPU:");
    for (const std::string& p : paths) std::printf(" %s", p.c_str());
    std::printf(" (default %s)\n", original.c_str());
    const double values[] = {-0.0, 0.0, 1.0, -1.0, 2.5, -2.5, 1e300, -1e300, 3.0};
    const std::size_t chunks[] = {1, 2, 3, 7, 16, 31, 64, 150};
    for (const std::string& path : paths) {
        CHECK(agent::set_simd_path(path));
        CHECK(agent::simd_path() == path);
        unsigned state = 99;
        for (std::size_t w = 1; w <= 101; ++w) {
            agent::MedianFilter f(w);
            BisectMedian ref{w, {}, {}};
            std::size_t mismatches = 0;
            for (std::size_t c = 0; c < 40; ++c) {
                const std::size_t len = chunks[(c + w) % (sizeof chunks / sizeof chunks[0])];
                std::vector<double> in(len), out(len);
                for (double& x : in) {
                    state = state * 1103515245u + 12345u;
                    x = values[(state >> 16) % (sizeof values / sizeof values[0])];
                }
                f.update_many(in.data(), len, out.data());
                for (std::size_t i = 0; i < len; ++i) mismatches += bits(out[i]) != bits(ref.update(in[i]));
            }
            ++checks;
            if (mismatches != 0) {
                ++failures;
                std::fprintf(stderr, "path %s, window %zu: %zu medians differ\n", path.c_str(), w,
                             mismatches);
            }
            // The window itself, oldest first, as the reference holds it.
            std::vector<double> expected(ref.ring.begin() + static_cast<std::ptrdiff_t>(ref.head),
                                         ref.ring.end());
            expected.insert(expected.end(), ref.ring.begin(),
                            ref.ring.begin() + static_cast<std::ptrdiff_t>(ref.head));
            const std::vector<double> got = f.samples();
            CHECK(got.size() == expected.size() &&
                  std::equal(got.begin(), got.end(), expected.begin(),
                             [](double a, double b) { return bits(a) == bits(b); }));
        }
    }
    CHECK(agent::set_simd_path(original));
}

void test_one_euro() {
    // dt = 1, min_cutoff = d_cutoff = 1/(2*pi): alpha(1/(2*pi)) = t/(t+1) with t = 1: 0.5.
    const double c = 1.0 / (2.0 * 3.141592653589793);
    agent::OneEuroFilter f(c, 0.0, c, 1.0);
    CHECK(!f.value());
    CHECK_NEAR(f.update(10.0), 10.0);
    CHECK_NEAR(f.update(20.0), 15.0);  // beta = 0: a plain low-pass with alpha 0.5
    CHECK_NEAR(f.state()->dx, 5.0);    // dx = (20 - 10)/1, dx_hat = 0 + 0.5*(10 - 0)
    // The derivative is taken from the previous raw sample (20), not the filtered 15:
    // dx = (20 - 20)/1 = 0, dx_hat = 5 + 0.5*(0 - 5) = 2.5; y = 15 + 0.5*(20 - 15) = 17.5.
    CHECK_NEAR(f.update(20.0), 17.5);
    CHECK_NEAR(f.state()->dx, 2.5);
    CHECK(f.state()->x == 20.0);

    // beta > 0: cutoff = c + beta*|dx_hat|. beta = c/5: after the second sample dx_hat = 5,
    // cutoff 2c, alpha = 2/(2+1) = 2/3, y = 10 + (2/3)*10 = 50/3; after the third dx_hat = 2.5,
    // cutoff 1.5c, alpha = 1.5/2.5 = 0.6, y = 50/3 + 0.6*(20 - 50/3) = 56/3.
    agent::OneEuroFilter g(c, c / 5.0, c, 1.0);
    g.update(10.0);
    CHECK_NEAR(g.update(20.0), 50.0 / 3.0);
    CHECK_NEAR(g.update(20.0), 56.0 / 3.0);

    CHECK_THROWS(agent::InvalidValue, f.update(-kInf), "raw must be finite, got -inf");
    CHECK_NEAR(*f.value(), 17.5);
    CHECK_THROWS(agent::InvalidValue, agent::OneEuroFilter(1.0, -0.5),
                 "beta must be a finite number >= 0, got -0.5");
    CHECK_THROWS(agent::InvalidValue, agent::OneEuroFilter(0.0), "min_cutoff must be");
    CHECK_THROWS(agent::InvalidValue, agent::OneEuroFilter(1.0, 0.0, kInf), "d_cutoff must be");
    CHECK_THROWS(agent::InvalidValue, agent::OneEuroFilter(1.0, 0.0, 1.0, -2.0), "dt must be");

    // State round trip mid-stream, then both continue identically; update_many is the same
    // arithmetic as update, bit for bit.
    agent::OneEuroFilter a(1.0, 0.1, 1.0, 0.01), b(1.0, 0.1, 1.0, 0.01);
    for (double x : {1.0, 3.0, 2.0, 8.0}) a.update(x);
    b.set_state(a.state());
    const std::vector<double> tail{4.0, -2.0, 0.5, 0.5, 7.0};
    std::vector<double> out(tail.size());
    b.update_many(tail.data(), tail.size(), out.data());
    for (std::size_t i = 0; i < tail.size(); ++i) CHECK(a.update(tail[i]) == out[i]);
    CHECK_THROWS(agent::InvalidValue, b.set_state(agent::OneEuroFilter::State{1.0, kNan, 0.0}),
                 "dx must be finite");
    CHECK_THROWS(agent::InvalidValue, b.set_state(agent::OneEuroFilter::State{1.0, 0.0, kInf}),
                 "x must be finite");
    CHECK(b.state()->y == a.state()->y);  // unchanged by the rejected states
    b.reset();
    CHECK(!b.value());
}

}  // namespace

int main() {
    test_format_double();
    test_pt1();
    test_pt1_batch_against_update();
    test_median();
    test_median_against_brute_force();
    test_median_simd_paths();
    test_one_euro();
    std::printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
