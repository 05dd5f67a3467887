/* read / write / writev on a non-blocking descriptor, keeping the GIL: the one piece of
 * gev-core that is hand-written C, because mypyc cannot call a system call directly.
 *
 * os.read and os.write release the GIL around the system call, as they must for a descriptor
 * that may block. The loop only ever calls them on non-blocking sockets, where the call returns
 * at once (data or EAGAIN), so releasing the GIL buys nothing and costs a mutex round trip, a
 * condition-variable signal and the thread-state swap on both sides: ~300 user-space
 * instructions per call, two or more calls per echoed message, about a fifth of a compiled
 * echo (bench/RESULTS.md). uvloop and picows keep the GIL for the same reason.
 *
 * The functions behave like their os counterparts for the arguments the loop passes (an int
 * descriptor, a size, bytes-like data): same return values, same OSError subclasses from errno
 * (BlockingIOError for EAGAIN), EINTR retried after running signal handlers. Never call them on
 * a blocking descriptor: that would stall every thread of the process. The pure-Python build and
 * GEV_PURE_PYTHON=1 use os.read / os.write / os.writev instead (_connection.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

/* Reads up to this size go through a buffer on the C stack (small enough for any thread's). */
#define SMALL_READ 4096

#ifndef IOV_MAX
#define IOV_MAX 16
#endif

static int
fd_arg(PyObject *obj, int *fd)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "file descriptor out of range");
        return -1;
    }
    *fd = (int)v;
    return 0;
}

/* read(fd, size) -> bytes: b"" at end of file. */
static PyObject *
fdio_read(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    Py_ssize_t size, n;
    PyObject *buf;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "read() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (fd_arg(args[0], &fd) < 0)
        return NULL;
    size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        errno = EINVAL;  /* as os.read */
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (size <= SMALL_READ) {
        /* Read on the stack, then allocate exactly: shrinking a freshly allocated bytes object
         * to the few bytes a small read returns is a pymalloc realloc (allocate, copy, free),
         * dearer than copying them once. */
        char small[SMALL_READ];
        for (;;) {
            n = read(fd, small, (size_t)size);
            if (n >= 0)
                return PyBytes_FromStringAndSize(small, n);
            if (errno != EINTR || PyErr_CheckSignals() < 0) {
                if (!PyErr_Occurred())
                    PyErr_SetFromErrno(PyExc_OSError);
                return NULL;
            }
        }
    }
    buf = PyBytes_FromStringAndSize(NULL, size);
    if (buf == NULL)
        return NULL;
    for (;;) {
        n = read(fd, PyBytes_AS_STRING(buf), (size_t)size);
        if (n >= 0)
            break;
        if (errno != EINTR || PyErr_CheckSignals() < 0) {
            if (!PyErr_Occurred())
                PyErr_SetFromErrno(PyExc_OSError);
            Py_DECREF(buf);
            return NULL;
        }
    }
    if (n != size && _PyBytes_Resize(&buf, n) < 0)
        return NULL;
    return buf;
}

/* write(fd, data) -> int: the number of bytes written. */
static PyObject *
fdio_write(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    Py_ssize_t n;
    Py_buffer view;
    const char *data;
    Py_ssize_t len;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "write() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (fd_arg(args[0], &fd) < 0)
        return NULL;
    view.obj = NULL;
    if (PyBytes_CheckExact(args[1])) {
        data = PyBytes_AS_STRING(args[1]);
        len = PyBytes_GET_SIZE(args[1]);
    }
    else {
        if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
            return NULL;
        data = (const char *)view.buf;
        len = view.len;
    }
    for (;;) {
        n = write(fd, data, (size_t)len);
        if (n >= 0)
            break;
        if (errno != EINTR || PyErr_CheckSignals() < 0) {
            if (!PyErr_Occurred())
                PyErr_SetFromErrno(PyExc_OSError);
            if (view.obj != NULL)
                PyBuffer_Release(&view);
            return NULL;
        }
    }
    if (view.obj != NULL)
        PyBuffer_Release(&view);
    return PyLong_FromSsize_t(n);
}

/* writev(fd, buffers) -> int: the number of bytes written, buffers a sequence of bytes-like. */
static PyObject *
fdio_writev(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    Py_ssize_t count, i, got = 0, n;
    PyObject *seq, *result = NULL;
    struct iovec iov[IOV_MAX];
    Py_buffer views[IOV_MAX];

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "writev() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (fd_arg(args[0], &fd) < 0)
        return NULL;
    seq = PySequence_Fast(args[1], "writev() arg 2 must be a sequence");
    if (seq == NULL)
        return NULL;
    count = PySequence_Fast_GET_SIZE(seq);
    if (count > IOV_MAX) {
        /* os.writev passes these to the kernel, which refuses them with EINVAL. */
        errno = EINVAL;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    for (; got < count; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0)
            goto done;
        iov[got].iov_base = views[got].buf;
        iov[got].iov_len = (size_t)views[got].len;
    }
    for (;;) {
        n = writev(fd, iov, (int)count);
        if (n >= 0)
            break;
        if (errno != EINTR || PyErr_CheckSignals() < 0) {
            if (!PyErr_Occurred())
                PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
    }
    result = PyLong_FromSsize_t(n);
done:
    for (i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef fdio_methods[] = {
    {"read", (PyCFunction)(void (*)(void))fdio_read, METH_FASTCALL,
     "read(fd, size) -> bytes\n\nos.read for a non-blocking descriptor, keeping the GIL."},
    {"write", (PyCFunction)(void (*)(void))fdio_write, METH_FASTCALL,
     "write(fd, data) -> int\n\nos.write for a non-blocking descriptor, keeping the GIL."},
    {"writev", (PyCFunction)(void (*)(void))fdio_writev, METH_FASTCALL,
     "writev(fd, buffers) -> int\n\nos.writev for a non-blocking descriptor, keeping the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef_Slot fdio_slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fdio_module = {
    PyModuleDef_HEAD_INIT,
    "gev_core._fdio",
    "System calls on non-blocking descriptors that keep the GIL (see the source's comment).",
    0,
    fdio_methods,
    fdio_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__fdio(void)
{
    return PyModuleDef_Init(&fdio_module);
}
