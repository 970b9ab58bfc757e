/*
 * Compiled versions of the decoder's two per-column loops (the hot path of a 52-column
 * FULL-identity row image, twice per UPDATE).  Each has a pure-Python twin that is used
 * when this module is not built; tests hold the two equal on the golden fixtures and on
 * random, truncated and byte-flipped messages.
 *
 *   split_tuple(buf, pos) -> (values, binary_mask, end)
 *       one pgoutput TupleData starting at buf[pos]: values is a tuple of bytes (text or
 *       binary column), None ('n') or the UNCHANGED_TOAST marker ('u').  Errors raise the
 *       error class given to configure() with the same message as the Python twin.
 *
 *   changed_names(names, before, after) -> frozenset
 *       the names whose raw values differ between two equally long value tuples.
 *
 *   configure(unchanged_marker, error_class) must be called once before split_tuple.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *unchanged_marker = NULL;
static PyObject *error_class = NULL;

static PyObject *
configure(PyObject *self, PyObject *args)
{
    PyObject *marker, *error;
    if (!PyArg_ParseTuple(args, "OO", &marker, &error))
        return NULL;
    Py_XSETREF(unchanged_marker, Py_NewRef(marker));
    Py_XSETREF(error_class, Py_NewRef(error));
    Py_RETURN_NONE;
}

static PyObject *
fail(const char *message)
{
    PyErr_SetString(error_class ? error_class : PyExc_ValueError, message);
    return NULL;
}

static PyObject *
split_tuple(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "split_tuple(buf, pos)");
        return NULL;
    }
    if (unchanged_marker == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "split_tuple before configure()");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL, *values = NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t len = view.len;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        goto done;
    if (pos < 0 || pos + 2 > len) {
        fail("row image truncated: a column header runs past the end of the message");
        goto done;
    }
    Py_ssize_t ncols = ((Py_ssize_t)buf[pos] << 8) | buf[pos + 1];
    pos += 2;
    values = PyTuple_New(ncols);
    if (values == NULL)
        goto done;
    unsigned long long mask_small = 0;
    PyObject *mask_big = NULL; /* only for binary columns past the 64th */
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (pos >= len) {
            fail("row image truncated: fewer columns than its column count");
            goto done_mask;
        }
        unsigned char kind = buf[pos];
        PyObject *item;
        if (kind == 't' || kind == 'b') {
            if (pos + 5 > len) {
                fail("row image truncated: a column header runs past the end of the message");
                goto done_mask;
            }
            unsigned long long length = ((unsigned long long)buf[pos + 1] << 24) |
                                        ((unsigned long long)buf[pos + 2] << 16) |
                                        ((unsigned long long)buf[pos + 3] << 8) | buf[pos + 4];
            pos += 5;
            if ((unsigned long long)(len - pos) < length) {
                fail("column value runs past the end of the message");
                goto done_mask;
            }
            item = PyBytes_FromStringAndSize((const char *)buf + pos, (Py_ssize_t)length);
            if (item == NULL)
                goto done_mask;
            pos += (Py_ssize_t)length;
            if (kind == 'b') {
                if (i < 64) {
                    mask_small |= 1ULL << i;
                } else {
                    PyObject *one = PyLong_FromLong(1), *shift = PyLong_FromSsize_t(i), *bit = NULL;
                    if (one && shift)
                        bit = PyNumber_Lshift(one, shift);
                    Py_XDECREF(one);
                    Py_XDECREF(shift);
                    if (bit == NULL) {
                        Py_DECREF(item);
                        goto done_mask;
                    }
                    PyObject *merged = mask_big ? PyNumber_Or(mask_big, bit) : Py_NewRef(bit);
                    Py_DECREF(bit);
                    Py_XSETREF(mask_big, merged);
                    if (mask_big == NULL) {
                        Py_DECREF(item);
                        goto done_mask;
                    }
                }
            }
        } else if (kind == 'n') {
            item = Py_NewRef(Py_None);
            pos += 1;
        } else if (kind == 'u') {
            item = Py_NewRef(unchanged_marker);
            pos += 1;
        } else {
            char message[64];
            snprintf(message, sizeof message, "unknown tuple column kind 0x%02x", kind);
            fail(message);
            goto done_mask;
        }
        PyTuple_SET_ITEM(values, i, item);
    }
    {
        PyObject *mask = PyLong_FromUnsignedLongLong(mask_small);
        if (mask != NULL && mask_big != NULL)
            Py_SETREF(mask, PyNumber_Or(mask, mask_big));
        PyObject *end = mask != NULL ? PyLong_FromSsize_t(pos) : NULL;
        result = end != NULL ? PyTuple_New(3) : NULL;
        if (result == NULL) {
            Py_XDECREF(mask);
            Py_XDECREF(end);
            goto done_mask;
        }
        PyTuple_SET_ITEM(result, 0, values); /* each steals its reference */
        PyTuple_SET_ITEM(result, 1, mask);
        PyTuple_SET_ITEM(result, 2, end);
        values = NULL;
    }
done_mask:
    Py_XDECREF(mask_big);
done:
    Py_XDECREF(values);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
changed_names(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[0]) || !PyTuple_Check(args[1]) || !PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "changed_names(names, before, after) takes three tuples");
        return NULL;
    }
    PyObject *names = args[0], *before = args[1], *after = args[2];
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (PyTuple_GET_SIZE(before) != n || PyTuple_GET_SIZE(after) != n) {
        PyErr_SetString(PyExc_ValueError, "changed_names: tuples of different lengths");
        return NULL;
    }
    PyObject *out = PyFrozenSet_New(NULL);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyTuple_GET_ITEM(before, i), *y = PyTuple_GET_ITEM(after, i);
        if (x == y)
            continue;
        int same;
        if (PyBytes_CheckExact(x) && PyBytes_CheckExact(y)) {
            Py_ssize_t lx = PyBytes_GET_SIZE(x);
            same = lx == PyBytes_GET_SIZE(y) && memcmp(PyBytes_AS_STRING(x), PyBytes_AS_STRING(y), lx) == 0;
        } else {
            same = PyObject_RichCompareBool(x, y, Py_EQ);
            if (same < 0) {
                Py_DECREF(out);
                return NULL;
            }
        }
        if (!same && PySet_Add(out, PyTuple_GET_ITEM(names, i)) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "configure(unchanged_marker, error_class)"},
    {"split_tuple", (PyCFunction)(void (*)(void))split_tuple, METH_FASTCALL,
     "split_tuple(buf, pos) -> (values, binary_mask, end)"},
    {"changed_names", (PyCFunction)(void (*)(void))changed_names, METH_FASTCALL,
     "changed_names(names, before, after) -> frozenset of the names whose values differ"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "Compiled hot loops of the pgoutput decoder.", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
