/* XOR of a WebSocket payload with its 4-byte masking key (RFC 6455 5.3): the one piece of
 * gev-websocket that is hand-written C, because no Python spelling of a per-byte XOR comes
 * near memory speed (mypyc compiles a byte loop, but a loop of boxed-int indexing still costs
 * ~1 ns/byte; this costs ~0.1). The pure-Python fallback in _fastpath.py gives the same bytes
 * and is what runs when this module is absent (pure wheel, GEV_PURE_PYTHON=1).
 *
 * apply_mask(data, mask) -> bytes, data any contiguous bytes-like object, mask exactly 4 bytes;
 * unmask_frame(data, start, size) -> bytes, the payload of a masked frame in place (the fast
 * path's call). Masking is an involution, so the same calls mask.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The XOR itself, wide: a 4 KiB payload is most of a message's cost otherwise. The key is
 * repeated across a whole vector in memory order, and every vector starts at a multiple of
 * its width from the payload's start, so byte i always meets key[i & 3] whatever the byte
 * order. memcpy keeps unaligned loads and stores defined (compilers turn it into one move).
 * GCC and Clang get 16-byte vectors (SSE2 on x86-64, NEON on ARM64) and, on x86-64 CPUs
 * that have it, a 32-byte AVX2 loop chosen once at import; other compilers 8 bytes. */
#if defined(__GNUC__)
typedef uint32_t v16 __attribute__((vector_size(16)));
#endif

static void
xor_tail(unsigned char *dst, const unsigned char *src, Py_ssize_t i, Py_ssize_t n,
         const unsigned char *key, uint32_t k32)
{
    uint64_t k64 = ((uint64_t)k32 << 32) | k32, chunk;
    for (; i + 8 <= n; i += 8) {
        memcpy(&chunk, src + i, 8);
        chunk ^= k64;
        memcpy(dst + i, &chunk, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[i & 3];
}

/* k32: the key's four bytes as they lie in memory, so every lane below holds them in order. */
static void
xor_generic(unsigned char *dst, const unsigned char *src, Py_ssize_t n, const unsigned char *key,
            uint32_t k32)
{
    Py_ssize_t i = 0;
#if defined(__GNUC__)
    v16 k = (v16){0} + k32, a, b;
    for (; i + 32 <= n; i += 32) {
        memcpy(&a, src + i, 16);
        memcpy(&b, src + i + 16, 16);
        a ^= k;
        b ^= k;
        memcpy(dst + i, &a, 16);
        memcpy(dst + i + 16, &b, 16);
    }
#endif
    xor_tail(dst, src, i, n, key, k32);
}

#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_AVX2_PATH 1
typedef uint32_t v32 __attribute__((vector_size(32)));

__attribute__((target("avx2"))) static void
xor_avx2(unsigned char *dst, const unsigned char *src, Py_ssize_t n, const unsigned char *key,
         uint32_t k32)
{
    Py_ssize_t i = 0;
    v32 k = (v32){0} + k32, a, b;
    for (; i + 64 <= n; i += 64) {
        memcpy(&a, src + i, 32);
        memcpy(&b, src + i + 32, 32);
        a ^= k;
        b ^= k;
        memcpy(dst + i, &a, 32);
        memcpy(dst + i + 32, &b, 32);
    }
    xor_generic(dst + i, src + i, n - i, key, k32);  /* i is a multiple of 4: the key lines up */
}
static int have_avx2;
#endif

static void
xor_mask(unsigned char *dst, const unsigned char *src, Py_ssize_t n, const unsigned char *key)
{
    uint32_t k32;
    memcpy(&k32, key, 4);
#ifdef HAVE_AVX2_PATH
    if (n >= 128 && have_avx2) {
        xor_avx2(dst, src, n, key, k32);
        return;
    }
#endif
    xor_generic(dst, src, n, key, k32);
}

static PyObject *
apply_mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    PyObject *result = NULL;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "apply_mask() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_Format(PyExc_ValueError, "mask must contain 4 bytes, not %zd", mask.len);
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL)
        goto done;
    xor_mask((unsigned char *)PyBytes_AS_STRING(result), (const unsigned char *)data.buf,
             data.len, (const unsigned char *)mask.buf);
done:
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
    return result;
}

/* unmask_frame(data, start, size) -> bytes: the payload data[start:start + size] unmasked
 * with the key in the four bytes before it, where a masked frame's header ends. The fast path
 * calls this once per frame: no slice of the payload or of the key is made first, and a bytes
 * buffer (what the reactor's reads give) is used without the buffer protocol. */
static PyObject *
unmask_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    const unsigned char *buf;
    Py_ssize_t len, start, size;
    PyObject *result = NULL;
    int is_bytes;

    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "unmask_frame() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    size = PyLong_AsSsize_t(args[2]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    is_bytes = PyBytes_CheckExact(args[0]);
    if (is_bytes) {
        buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
        len = PyBytes_GET_SIZE(args[0]);
    }
    else {
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
            return NULL;
        buf = (const unsigned char *)view.buf;
        len = view.len;
    }
    if (start < 4 || size < 0 || size > len - start) {
        PyErr_Format(PyExc_ValueError,
                     "no masking key and %zd payload bytes at offset %zd of %zd bytes",
                     size, start, len);
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL)
        goto done;
    xor_mask((unsigned char *)PyBytes_AS_STRING(result), buf + start, size, buf + start - 4);
done:
    if (!is_bytes)
        PyBuffer_Release(&view);
    return result;
}

static PyMethodDef unmask_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask) -> bytes\n\nXOR data with the 4-byte mask repeated."},
    {"unmask_frame", (PyCFunction)(void (*)(void))unmask_frame, METH_FASTCALL,
     "unmask_frame(data, start, size) -> bytes\n\n"
     "data[start:start + size] XORed with the 4-byte key data[start - 4:start]."},
    {NULL, NULL, 0, NULL},
};

static int
unmask_exec(PyObject *module)
{
#ifdef HAVE_AVX2_PATH
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") != 0;
#endif
    return 0;
}

static struct PyModuleDef_Slot unmask_slots[] = {
    {Py_mod_exec, unmask_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef unmask_module = {
    PyModuleDef_HEAD_INIT,
    "gev_websocket._unmask",
    "Native XOR unmask of WebSocket payloads (see _fastpath.py for the pure fallback).",
    0,
    unmask_methods,
    unmask_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__unmask(void)
{
    return PyModuleDef_Init(&unmask_module);
}
