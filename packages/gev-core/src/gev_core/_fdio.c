/* read / write / writev on a non-blocking descriptor, and epoll_wait, keeping the GIL: the one
 * piece of gev-core that is hand-written C, because mypyc cannot call a system call directly.
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
#include <math.h>
#include <time.h>
#include <sys/uio.h>
#ifdef __linux__
#include <sys/epoll.h>
#endif
#include <unistd.h>

/* Reads up to this size go through a buffer on the C stack (small enough for any thread's). */
#define SMALL_READ 4096

#ifndef IOV_MAX
#define IOV_MAX 16
#endif
#define SMALL_IOV 64

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
    /* IOV_MAX (1024 on Linux) of each would put ~96 KiB on the stack of whatever thread runs
     * the loop (musl's threads get 128 KiB): short lists use the stack, longer ones the heap. */
    struct iovec small_iov[SMALL_IOV], *iov = small_iov;
    Py_buffer small_views[SMALL_IOV], *views = small_views;

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
    if (count > SMALL_IOV) {
        iov = PyMem_New(struct iovec, (size_t)count);
        views = PyMem_New(Py_buffer, (size_t)count);
        if (iov == NULL || views == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (; got < count; got++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, got);
        if (PyBytes_CheckExact(item)) {
            /* What PyObject_GetBuffer would fill in, without its checks: a reference held
             * (the buffer protocol of a later item may run code that changes the list), and
             * released below like any view (bytes has no releasebuffer). */
            views[got].obj = Py_NewRef(item);
            iov[got].iov_base = PyBytes_AS_STRING(item);
            iov[got].iov_len = (size_t)PyBytes_GET_SIZE(item);
            continue;
        }
        if (PyObject_GetBuffer(item, &views[got], PyBUF_SIMPLE) < 0)
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
    if (iov != small_iov)
        PyMem_Free(iov);
    if (views != small_views)
        PyMem_Free(views);
    Py_DECREF(seq);
    return result;
}

#ifdef __linux__
/* epoll_wait(epfd, timeout) -> list of (fd, events): select.epoll.poll for the loop's own epoll
 * descriptor (registered through select.epoll, which stores the fd as the event's data). It
 * differs in cost only: select.epoll.poll builds each pair with Py_BuildValue, which parses a
 * format string per event, and releases the GIL even when it does not wait. Here the GIL is
 * released only for a call that may block (timeout != 0). The timeout is in seconds, negative
 * for none, rounded up to milliseconds; EINTR retries with the time left, as PEP 475 asks. */
#define MAX_EVENTS 1023 /* select.epoll.poll's default: FD_SETSIZE - 1 */

static double
monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static PyObject *
fdio_epoll_wait(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    int epfd, ms, n, i;
    double timeout, deadline = 0.0;
    struct epoll_event events[MAX_EVENTS];
    PyObject *list;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "epoll_wait() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (fd_arg(args[0], &epfd) < 0)
        return NULL;
    timeout = PyFloat_AsDouble(args[1]);
    if (timeout == -1.0 && PyErr_Occurred())
        return NULL;
    if (timeout < 0)
        ms = -1;
    else {
        double t = ceil(timeout * 1e3);
        ms = t >= (double)INT_MAX ? INT_MAX : (int)t;
        if (ms > 0)
            deadline = monotonic_ms() + ms;
    }
    /* A signal that arrived while this thread held the GIL (not inside a wait, so no EINTR)
     * leaves its Python handler pending until bytecode runs; a compiled loop with nothing
     * interpreted to call (relayed connections) could then sleep here with a SIGTERM unserved.
     * Run pending handlers before any wait that may block. */
    if (ms != 0 && PyErr_CheckSignals() < 0)
        return NULL;
    for (;;) {
        if (ms == 0)
            n = epoll_wait(epfd, events, MAX_EVENTS, 0);
        else {
            Py_BEGIN_ALLOW_THREADS
            n = epoll_wait(epfd, events, MAX_EVENTS, ms);
            Py_END_ALLOW_THREADS
        }
        if (n >= 0)
            break;
        if (errno != EINTR)
            return PyErr_SetFromErrno(PyExc_OSError);
        if (PyErr_CheckSignals() < 0)
            return NULL;
        if (ms > 0) {
            double left = ceil(deadline - monotonic_ms());
            ms = left <= 0 ? 0 : (int)left;
        }
    }
    list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        PyObject *pair = PyTuple_New(2), *fd, *ev;
        if (pair == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, pair);
        fd = PyLong_FromLong(events[i].data.fd);
        if (fd == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, fd);
        ev = PyLong_FromUnsignedLong(events[i].events);
        if (ev == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 1, ev);
    }
    return list;
}
#endif

static PyMethodDef fdio_methods[] = {
    {"read", (PyCFunction)(void (*)(void))fdio_read, METH_FASTCALL,
     "read(fd, size) -> bytes\n\nos.read for a non-blocking descriptor, keeping the GIL."},
    {"write", (PyCFunction)(void (*)(void))fdio_write, METH_FASTCALL,
     "write(fd, data) -> int\n\nos.write for a non-blocking descriptor, keeping the GIL."},
    {"writev", (PyCFunction)(void (*)(void))fdio_writev, METH_FASTCALL,
     "writev(fd, buffers) -> int\n\nos.writev for a non-blocking descriptor, keeping the GIL."},
#ifdef __linux__
    {"epoll_wait", (PyCFunction)(void (*)(void))fdio_epoll_wait, METH_FASTCALL,
     "epoll_wait(epfd, timeout) -> list of (fd, events)\n\n"
     "select.epoll.poll for the loop's epoll descriptor, keeping the GIL unless it may block."},
#endif
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
