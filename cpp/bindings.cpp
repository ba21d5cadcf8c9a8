// agent._filters: the Python face of the C++ filter core (cpp/filters.hpp).
//
// Everything Python-specific lives here: number conversion (bool is rejected, ints and any
// numbers.Real are accepted), messages worded with Python's repr, the buffer fast path of
// update_many, the state dicts and pickling. The messages and return types match the pure
// Python references in agent/filters.py word for word; tests/test_filters*.py hold both to it.
//
// Written against the pybind11 API common to 2.10 (Debian 12) and 3.x (PyPI).
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "filters.hpp"

namespace py = pybind11;

namespace {

constexpr Py_ssize_t kMaxWindow = 1000000;

const char* const kThreadSafety =
    "Thread safety: the GIL is held for the whole of every call, so concurrent calls cannot "
    "corrupt memory, but a filter holds one stream of state: give each device thread its "
    "own filter.";

// ------------------------------------------------------------------------------------------
// Small helpers around the C API. Errors are raised as pybind11 exceptions (which carry their
// Python type), so every path out of a binding leaves the interpreter in a clean state.

std::string repr_text(py::handle h) { return py::repr(h).cast<std::string>(); }

std::string float_repr(double x) { return repr_text(py::float_(x)); }

std::string type_name(py::handle h) {
    // type(x).__name__, as the Python references say it ("str", not "builtins.str").
    return py::handle(reinterpret_cast<PyObject*>(Py_TYPE(h.ptr())))
        .attr("__name__")
        .cast<std::string>();
}

// Who is being converted, for messages: "raw", "tau", "values[17]", "state['samples'][3]".
// The text is only built when something is wrong, so the fast path stays free of strings.
struct Subject {
    const char* name;
    Py_ssize_t index = -1;

    std::string text() const {
        std::string s(name);
        if (index >= 0) s += "[" + std::to_string(index) + "]";
        return s;
    }
};

PyObject* numbers_real() {
    // Imported once; the module object keeps the class alive for the interpreter's lifetime.
    static PyObject* real = [] {
        py::object cls = py::module_::import("numbers").attr("Real");
        return cls.release().ptr();
    }();
    return real;
}

[[noreturn]] void too_large(const Subject& who) {
    throw py::value_error(who.text() + " is too large for a float");
}

double long_to_double(PyObject* o, const Subject& who) {
    const double d = PyLong_AsDouble(o);
    if (d == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            too_large(who);
        }
        throw py::error_already_set();
    }
    return d;
}

// A real number as a double. Exact float and int come first: that is the common case and it
// must stay cheap for single updates. Non-finite results are the caller's concern.
double to_double(PyObject* o, const Subject& who) {
    if (PyFloat_CheckExact(o)) return PyFloat_AS_DOUBLE(o);
    if (PyLong_CheckExact(o)) return long_to_double(o, who);
    if (PyBool_Check(o)) throw py::type_error(who.text() + " must be a number, not bool");
    if (PyFloat_Check(o)) return PyFloat_AS_DOUBLE(o);
    if (PyLong_Check(o)) return long_to_double(o, who);
    const int is_real = PyObject_IsInstance(o, numbers_real());
    if (is_real < 0) throw py::error_already_set();
    if (is_real) {
        PyObject* f = PyNumber_Float(o);
        if (f == nullptr) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                too_large(who);
            }
            throw py::error_already_set();
        }
        const double d = PyFloat_AS_DOUBLE(f);
        Py_DECREF(f);
        return d;
    }
    throw py::type_error(who.text() + " must be a number, not " + type_name(o));
}

double to_double(py::handle h, const char* name) { return to_double(h.ptr(), Subject{name}); }

double to_finite(PyObject* o, const Subject& who) {
    const double d = to_double(o, who);
    if (!std::isfinite(d)) throw py::value_error(who.text() + " must be finite, got " + float_repr(d));
    return d;
}

std::size_t to_window(py::handle h) {
    PyObject* o = h.ptr();
    if (PyBool_Check(o)) throw py::type_error("window must be an integer, not bool");
    if (!PyIndex_Check(o)) throw py::type_error("window must be an integer, not " + type_name(o));
    py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(o));
    if (!index) throw py::error_already_set();
    int overflow = 0;
    const long long w = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    if (w == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow < 0 || (overflow == 0 && w < 1)) {
        throw py::value_error("window must be an integer >= 1, got " + repr_text(index));
    }
    if (overflow > 0 || w > kMaxWindow) {
        throw py::value_error("window must be an integer <= " + std::to_string(kMaxWindow) +
                              ", got " + repr_text(index));
    }
    return static_cast<std::size_t>(w);
}

// ------------------------------------------------------------------------------------------
// update_many

// Releases a Py_buffer on every way out.
struct BufferView {
    Py_buffer view{};
    bool held = false;
    ~BufferView() {
        if (held) PyBuffer_Release(&view);
    }
};

bool is_native_double(const char* format) {
    if (format == nullptr) return false;  // NULL means unsigned bytes
    const std::string f(format);
    if (f == "d" || f == "@d" || f == "=d") return true;
    const uint16_t probe = 1;
    const bool little = *reinterpret_cast<const unsigned char*>(&probe) == 1;
    return little ? f == "<d" : (f == ">d" || f == "!d");
}

// A new array('d') of n zeros: repeating a one-element array is a single C-level allocation.
py::object new_double_array(Py_ssize_t n) {
    static PyObject* one_zero = [] {
        py::object arr = py::module_::import("array").attr("array")("d", py::make_tuple(0.0));
        return arr.release().ptr();
    }();
    py::object out = py::reinterpret_steal<py::object>(PySequence_Repeat(one_zero, n));
    if (!out) throw py::error_already_set();
    return out;
}

// Runs a 1-D buffer of doubles; the output is written straight into a new array('d').
template <class Filter>
py::object run_buffer(Filter& f, const Py_buffer& in) {
    const Py_ssize_t n = in.shape[0];
    const Py_ssize_t stride = in.strides[0];
    const char* base = static_cast<const char*>(in.buf);
    std::vector<double> copy;
    const double* src = reinterpret_cast<const double*>(base);
    const bool aligned = reinterpret_cast<std::uintptr_t>(base) % alignof(double) == 0;
    if (stride != static_cast<Py_ssize_t>(sizeof(double)) || !aligned) {
        // Strided or unaligned views (memoryview slices, numpy record fields) are gathered
        // first; memcpy is the portable way to read a double at any address.
        copy.resize(static_cast<std::size_t>(n));
        for (Py_ssize_t i = 0; i < n; ++i) {
            std::memcpy(&copy[static_cast<std::size_t>(i)], base + i * stride, sizeof(double));
        }
        src = copy.data();
    }
    py::object out = new_double_array(n);
    BufferView dst;
    if (PyObject_GetBuffer(out.ptr(), &dst.view, PyBUF_WRITABLE) != 0) {
        throw py::error_already_set();
    }
    dst.held = true;
    f.update_many(src, static_cast<std::size_t>(n), static_cast<double*>(dst.view.buf));
    return out;
}

// Any other iterable: numbers are converted (and type-checked) first, all of them, then the
// batch runs in C++ and comes back as a list of floats.
template <class Filter>
py::object run_iterable(Filter& f, py::handle values) {
    PyObject* o = values.ptr();
    std::vector<double> in;
    if (PyList_Check(o) || PyTuple_Check(o)) {
        // Index-based with a fresh size each round: converting an exotic number runs Python
        // code that could shrink the list under us.
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(o); ++i) {
            py::object item =
                py::reinterpret_borrow<py::object>(PySequence_Fast_GET_ITEM(o, i));
            if (i == 0) in.reserve(static_cast<std::size_t>(PySequence_Fast_GET_SIZE(o)));
            in.push_back(to_double(item.ptr(), Subject{"values", i}));
        }
    } else {
        py::object it = py::reinterpret_steal<py::object>(PyObject_GetIter(o));
        if (!it) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw py::error_already_set();
            PyErr_Clear();
            throw py::type_error("values must be an iterable of numbers, not " + type_name(o));
        }
        Py_ssize_t i = 0;
        while (PyObject* raw = PyIter_Next(it.ptr())) {
            py::object item = py::reinterpret_steal<py::object>(raw);
            in.push_back(to_double(item.ptr(), Subject{"values", i++}));
        }
        if (PyErr_Occurred()) throw py::error_already_set();
    }
    std::vector<double> out(in.size());
    f.update_many(in.data(), in.size(), out.data());
    py::list result(static_cast<Py_ssize_t>(out.size()));
    for (std::size_t i = 0; i < out.size(); ++i) {
        PyObject* x = PyFloat_FromDouble(out[i]);
        if (x == nullptr) throw py::error_already_set();
        PyList_SET_ITEM(result.ptr(), static_cast<Py_ssize_t>(i), x);
    }
    return std::move(result);
}

template <class Filter>
py::object update_many(Filter& f, py::handle values) {
    PyObject* o = values.ptr();
    if (PyObject_CheckBuffer(o)) {
        BufferView in;
        if (PyObject_GetBuffer(o, &in.view, PyBUF_RECORDS_RO) == 0) {
            in.held = true;
            if (in.view.ndim == 1 && in.view.itemsize == sizeof(double) &&
                is_native_double(in.view.format)) {
                return run_buffer(f, in.view);
            }
        } else {
            PyErr_Clear();  // an exporter that cannot describe itself: iterate it instead
        }
    }
    return run_iterable(f, values);
}

// ------------------------------------------------------------------------------------------
// State dicts: {"filter": kind, "version": 1, ...}. Checked completely before anything is
// restored, so a bad dict leaves the filter as it was.

constexpr long kStateVersion = 1;

py::dict state_header(const char* kind) {
    py::dict d;
    d["filter"] = kind;
    d["version"] = kStateVersion;
    return d;
}

py::object optional_float(std::optional<double> v) {
    if (!v) return py::none();
    return py::float_(*v);
}

std::string key_text(const char* key) { return std::string("state['") + key + "']"; }

py::handle state_key(py::handle state, const char* key) {
    PyObject* v = PyDict_GetItemString(state.ptr(), key);  // borrowed
    if (v == nullptr) {
        if (PyErr_Occurred()) throw py::error_already_set();
        throw py::value_error(std::string("state is missing the key '") + key + "'");
    }
    return v;
}

void check_header(py::handle state, const char* kind) {
    if (!PyDict_Check(state.ptr())) {
        throw py::type_error("state must be a dict, not " + type_name(state));
    }
    py::handle filter = state_key(state, "filter");
    if (!PyUnicode_Check(filter.ptr()) || filter.cast<std::string>() != kind) {
        throw py::value_error(key_text("filter") + " must be '" + kind + "', got " +
                              repr_text(filter));
    }
    py::handle version = state_key(state, "version");
    if (!PyLong_CheckExact(version.ptr()) || PyLong_AsLong(version.ptr()) != kStateVersion) {
        PyErr_Clear();  // a huge int overflows AsLong; it is wrong either way
        throw py::value_error(key_text("version") + " must be " + std::to_string(kStateVersion) +
                              ", got " + repr_text(version));
    }
}

std::optional<double> state_optional_float(py::handle state, const char* key) {
    py::handle v = state_key(state, key);
    if (v.is_none()) return std::nullopt;
    const std::string name = key_text(key);
    return to_finite(v.ptr(), Subject{name.c_str()});
}

// ------------------------------------------------------------------------------------------
// update(raw): the hot path. pybind11's general dispatcher costs about 100 ns a call, more than
// the filtering itself, so `update` is a plain METH_FASTCALL method: the instance's C++ value
// is read directly and only exact float/int get the quick conversion.

void set_python_error_from_current_exception() {
    try {
        throw;
    } catch (py::error_already_set& e) {
        e.restore();
    } catch (const py::builtin_exception& e) {
        e.set_error();
    } catch (const agent::InvalidValue& e) {
        const std::string msg = e.subject() + " " + e.requirement() + ", got " + float_repr(e.got());
        PyErr_SetString(PyExc_ValueError, msg.c_str());
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    }
}

template <class Filter>
PyObject* fast_update(PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                      PyObject* kwnames) {
    PyObject* raw = nullptr;
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs == 1 && nkw == 0) {
        raw = args[0];
    } else if (nargs == 0 && nkw == 1 &&
               PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "raw") == 0) {
        raw = args[0];
    } else {
        PyErr_Format(PyExc_TypeError, "update() takes exactly one argument, raw (%zd given)",
                     nargs + nkw);
        return nullptr;
    }
    // The method descriptor has already checked that self is an instance of the class.
    auto vh = reinterpret_cast<py::detail::instance*>(self)->get_value_and_holder();
    if (!vh.holder_constructed()) {
        PyErr_SetString(PyExc_TypeError, "update() called on an uninitialised filter");
        return nullptr;
    }
    try {
        const double x = to_double(raw, Subject{"raw"});
        return PyFloat_FromDouble(vh.template value_ptr<Filter>()->update(x));
    } catch (...) {
        set_python_error_from_current_exception();
        return nullptr;
    }
}

template <class Filter>
void def_fast_update(py::handle cls) {
    static PyMethodDef def = {
        "update", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&fast_update<Filter>)),
        METH_FASTCALL | METH_KEYWORDS,
        "update(raw)\n--\n\n"
        "Filter one raw sample and return the filtered value.\n\n"
        "The first update seeds the filter and returns ``raw`` unchanged. ``raw`` must be a "
        "finite real number (``bool`` is a TypeError); a rejected sample leaves the state "
        "unchanged."};
    py::object descr = py::reinterpret_steal<py::object>(
        PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), &def));
    if (!descr) throw py::error_already_set();
    py::setattr(cls, "update", descr);
}

// ------------------------------------------------------------------------------------------
// Shared method set: update, update_many, value, reset.

template <class Filter, class Cls>
void def_common(Cls& cls) {
    def_fast_update<Filter>(cls);
    cls.def("update_many", &update_many<Filter>, py::arg("values"),
             "Filter a whole sequence in C++ and return the outputs.\n\n"
             "A 1-D buffer of doubles (``array('d')``, memoryview, numpy float64) gives an "
             "``array('d')``; any other iterable of numbers gives a ``list[float]``. All values "
             "are checked first: on a bad one (``values[i] must be finite, got inf``) nothing "
             "is filtered and the state is unchanged.")
        .def_property_readonly(
            "value", [](const Filter& f) { return optional_float(f.value()); },
            "The current filtered value, or None before the first update (and after reset).")
        .def("reset", &Filter::reset, "Forget all history: ``value`` is None again.");
}

std::string params_repr(const char* cls, std::initializer_list<std::pair<const char*, double>> ps) {
    std::string s = std::string(cls) + "(";
    bool first = true;
    for (const auto& [name, v] : ps) {
        if (!first) s += ", ";
        first = false;
        s += std::string(name) + "=" + float_repr(v);
    }
    return s + ")";
}

// Pt1 ------------------------------------------------------------------------------------

py::dict pt1_state(const agent::Pt1Filter& f) {
    py::dict d = state_header("pt1");
    d["y"] = optional_float(f.state());
    return d;
}

void pt1_set_state(agent::Pt1Filter& f, py::handle state) {
    check_header(state, "pt1");
    f.set_state(state_optional_float(state, "y"));
}

// Median ----------------------------------------------------------------------------------

py::dict median_state(const agent::MedianFilter& f) {
    py::dict d = state_header("median");
    py::list samples;
    for (double x : f.samples()) samples.append(x);
    d["samples"] = samples;
    return d;
}

void median_set_state(agent::MedianFilter& f, py::handle state) {
    check_header(state, "median");
    py::handle samples = state_key(state, "samples");
    if (!PyList_Check(samples.ptr()) && !PyTuple_Check(samples.ptr())) {
        throw py::type_error(key_text("samples") + " must be a list, not " + type_name(samples));
    }
    const std::string name = key_text("samples");
    std::vector<double> xs;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(samples.ptr()); ++i) {
        py::object item =
            py::reinterpret_borrow<py::object>(PySequence_Fast_GET_ITEM(samples.ptr(), i));
        xs.push_back(to_finite(item.ptr(), Subject{name.c_str(), i}));
    }
    f.set_samples(xs);
}

// OneEuro ---------------------------------------------------------------------------------

py::dict one_euro_state(const agent::OneEuroFilter& f) {
    py::dict d = state_header("one_euro");
    const auto s = f.state();
    d["y"] = s ? py::object(py::float_(s->y)) : py::none();
    d["dx"] = s ? py::object(py::float_(s->dx)) : py::none();
    d["x"] = s ? py::object(py::float_(s->x)) : py::none();
    return d;
}

// y, dx and x are all None (not seeded) or all finite numbers; checked in that order.
void one_euro_set_state(agent::OneEuroFilter& f, py::handle state) {
    check_header(state, "one_euro");
    const std::optional<double> y = state_optional_float(state, "y");
    if (!y) {
        for (const char* key : {"dx", "x"}) {
            py::handle v = state_key(state, key);
            if (!v.is_none()) {
                throw py::value_error(key_text(key) + " must be None when " + key_text("y") +
                                      " is None, got " + repr_text(v));
            }
        }
        f.set_state(std::nullopt);
        return;
    }
    const std::string dx_name = key_text("dx");
    const double dx = to_finite(state_key(state, "dx").ptr(), Subject{dx_name.c_str()});
    const std::string x_name = key_text("x");
    const double x = to_finite(state_key(state, "x").ptr(), Subject{x_name.c_str()});
    f.set_state(agent::OneEuroFilter::State{*y, dx, x});
}

py::list names_list(const std::vector<std::string>& names) {
    py::list out;
    for (const std::string& name : names) out.append(py::str(name));
    return out;
}

}  // namespace

PYBIND11_MODULE(_filters, m) {
    m.doc() =
        "C++ signal filters (PT1, sliding median, 1€) behind the agent.Filter protocol.\n\n"
        "Import them from ``agent`` (or ``agent.filters``), which falls back to the pure "
        "Python references when this extension is missing. The GIL is held for the whole of "
        "every call: concurrent calls cannot corrupt memory, but each filter is one stream of "
        "state, so use one filter per device thread.";
    m.attr("MAX_WINDOW") = kMaxWindow;

    // Internal: the CPU dispatch of MedianFilter.update_many (filters.hpp, simd_path). Tests
    // and the benchmark use these to run every path this machine has; results are identical
    // on all of them. AGENT_FILTERS_NO_SIMD=1 in the environment, read once here at import,
    // pins the portable path (e.g. to rule the wide kernels out when chasing a problem).
    if (const char* no_simd = std::getenv("AGENT_FILTERS_NO_SIMD");
        no_simd != nullptr && std::string(no_simd) == "1") {
        agent::set_simd_path("portable");
    }
    m.def("_simd_path", &agent::simd_path,
          "Internal: the code MedianFilter.update_many runs for windows up to 100: "
          "'avx512', 'avx2' (x86-64, chosen at run time by what the CPU supports) or "
          "'portable' (SSE2/NEON; also with AGENT_FILTERS_NO_SIMD=1 set at import).");
    m.def(
        "_simd_paths", [] { return names_list(agent::simd_paths()); },
        "Internal: the paths this CPU can run, 'portable' first.");
    m.def(
        "_set_simd_path",
        [](const std::string& name) {
            if (!agent::set_simd_path(name)) {
                throw py::value_error("unknown or unsupported SIMD path " + repr_text(py::str(name)) +
                                      "; this CPU runs " +
                                      repr_text(names_list(agent::simd_paths())));
            }
        },
        py::arg("name"),
        "Internal, for tests and benchmarks: make MedianFilter.update_many use this path "
        "(one of _simd_paths()) from now on, in every filter of the process. Not to be called "
        "while another thread filters.");

    // Rules broken inside the core come back as ValueError worded with Python's repr.
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const agent::InvalidValue& e) {
            const std::string msg =
                e.subject() + " " + e.requirement() + ", got " + float_repr(e.got());
            PyErr_SetString(PyExc_ValueError, msg.c_str());
        }
    });

    const std::string pt1_doc =
        std::string("First-order low-pass (PT1) filter.\n\n"
                    "``alpha = dt / (tau + dt)``; each update does ``y += alpha * (x - y)``. "
                    "``update_many`` takes four samples per step in a shorter arithmetic chain: "
                    "the same filter, a few ulps from one-by-one rounding, and a constant input "
                    "stays exactly constant. ``tau`` and ``dt`` (same time unit) must be finite "
                    "and > 0. ``value`` is None before the first update.\n\n") +
        kThreadSafety;
    py::class_<agent::Pt1Filter> pt1(m, "Pt1Filter", pt1_doc.c_str());
    pt1.def(py::init([](py::handle tau, py::handle dt) {
                const double t = to_double(tau, "tau");
                const double d = to_double(dt, "dt");
                return std::make_unique<agent::Pt1Filter>(t, d);
            }),
            py::arg("tau"), py::arg("dt"));
    def_common<agent::Pt1Filter>(pt1);
    pt1.def_property_readonly("tau", &agent::Pt1Filter::tau)
        .def_property_readonly("dt", &agent::Pt1Filter::dt)
        .def_property_readonly("alpha", &agent::Pt1Filter::alpha)
        .def("get_state", &pt1_state,
             "The signal history as a JSON-able dict: "
             "``{'filter': 'pt1', 'version': 1, 'y': float | None}``.")
        .def("set_state", &pt1_set_state, py::arg("state"),
             "Restore a dict from get_state (of this or the Python filter). Parameters stay "
             "this filter's own. A bad dict raises and changes nothing.")
        .def("__repr__",
             [](const agent::Pt1Filter& f) {
                 return params_repr("Pt1Filter", {{"tau", f.tau()}, {"dt", f.dt()}});
             })
        .def(py::pickle(
            [](const agent::Pt1Filter& f) { return py::make_tuple(f.tau(), f.dt(), pt1_state(f)); },
            [](const py::tuple& t) {
                auto f = std::make_unique<agent::Pt1Filter>(t[0].cast<double>(),
                                                             t[1].cast<double>());
                pt1_set_state(*f, t[2]);
                return f;
            }));

    const std::string median_doc =
        std::string("Sliding-window median filter.\n\n"
                    "The median of the last ``window`` samples (mean of the two middle ones "
                    "for an even count; during warm-up, of the samples seen so far). Each "
                    "update costs O(window) at most, never a re-sort. ``value`` is None before "
                    "the first update.\n\n") +
        kThreadSafety;
    py::class_<agent::MedianFilter> median(m, "MedianFilter", median_doc.c_str());
    median.def(py::init([](py::handle window) {
                   return std::make_unique<agent::MedianFilter>(to_window(window));
               }),
               py::arg("window"));
    def_common<agent::MedianFilter>(median);
    median.def_property_readonly("window", &agent::MedianFilter::window)
        .def("get_state", &median_state,
             "The signal history as a JSON-able dict: "
             "``{'filter': 'median', 'version': 1, 'samples': [oldest, ..., newest]}``.")
        .def("set_state", &median_set_state, py::arg("state"),
             "Restore a dict from get_state (of this or the Python filter). With a smaller "
             "window only the newest samples are kept. A bad dict raises and changes nothing.")
        .def("__repr__",
             [](const agent::MedianFilter& f) {
                 return "MedianFilter(window=" + std::to_string(f.window()) + ")";
             })
        .def(py::pickle(
            [](const agent::MedianFilter& f) { return py::make_tuple(f.window(), median_state(f)); },
            [](const py::tuple& t) {
                auto f = std::make_unique<agent::MedianFilter>(t[0].cast<std::size_t>());
                median_set_state(*f, t[1]);
                return f;
            }));

    const std::string one_euro_doc =
        std::string("The 1€ filter (Casiez, Roussel, Vogel 2012) with a fixed period ``dt``.\n\n"
                    "``alpha(fc) = dt / (dt + 1/(2π·fc))``. The derivative "
                    "``(x - x_prev) / dt`` — ``x_prev`` is the previous *raw* sample, as in "
                    "Casiez's reference code — is low-passed with ``d_cutoff``; then "
                    "``fc = min_cutoff + beta·|dx_hat|`` and ``y`` is low-passed with "
                    "``alpha(fc)``. The first update seeds ``y = x_prev = x``, ``dx_hat = 0``. "
                    "Cutoffs (Hz) and ``dt`` (s) must be finite and > 0, ``beta`` finite and "
                    ">= 0. ``value`` is None before the first update.\n\n") +
        kThreadSafety;
    py::class_<agent::OneEuroFilter> one_euro(m, "OneEuroFilter", one_euro_doc.c_str());
    one_euro.def(py::init([](py::handle min_cutoff, py::handle beta, py::handle d_cutoff,
                             py::handle dt) {
                     const double mc = to_double(min_cutoff, "min_cutoff");
                     const double b = to_double(beta, "beta");
                     const double dc = to_double(d_cutoff, "d_cutoff");
                     const double d = to_double(dt, "dt");
                     return std::make_unique<agent::OneEuroFilter>(mc, b, dc, d);
                 }),
                 py::arg("min_cutoff") = 1.0, py::arg("beta") = 0.0, py::arg("d_cutoff") = 1.0,
                 py::arg("dt") = 1.0);
    def_common<agent::OneEuroFilter>(one_euro);
    one_euro.def_property_readonly("min_cutoff", &agent::OneEuroFilter::min_cutoff)
        .def_property_readonly("beta", &agent::OneEuroFilter::beta)
        .def_property_readonly("d_cutoff", &agent::OneEuroFilter::d_cutoff)
        .def_property_readonly("dt", &agent::OneEuroFilter::dt)
        .def("get_state", &one_euro_state,
             "The signal history as a JSON-able dict: ``{'filter': 'one_euro', 'version': 1, "
             "'y': float | None, 'dx': float | None, 'x': float | None}`` (``y`` the filtered "
             "value, ``dx`` the smoothed derivative, ``x`` the previous raw sample; all None "
             "before the first update).")
        .def("set_state", &one_euro_set_state, py::arg("state"),
             "Restore a dict from get_state (of this or the Python filter). Parameters stay "
             "this filter's own. A bad dict raises and changes nothing.")
        .def("__repr__",
             [](const agent::OneEuroFilter& f) {
                 return params_repr("OneEuroFilter", {{"min_cutoff", f.min_cutoff()},
                                                      {"beta", f.beta()},
                                                      {"d_cutoff", f.d_cutoff()},
                                                      {"dt", f.dt()}});
             })
        .def(py::pickle(
            [](const agent::OneEuroFilter& f) {
                return py::make_tuple(f.min_cutoff(), f.beta(), f.d_cutoff(), f.dt(),
                                      one_euro_state(f));
            },
            [](const py::tuple& t) {
                auto f = std::make_unique<agent::OneEuroFilter>(
                    t[0].cast<double>(), t[1].cast<double>(), t[2].cast<double>(),
                    t[3].cast<double>());
                one_euro_set_state(*f, t[4]);
                return f;
            }));
}
