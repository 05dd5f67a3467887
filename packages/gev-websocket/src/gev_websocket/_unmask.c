/* XOR of a WebSocket payload with its 4-byte masking key (RFC 6455 5.3): the one piece of
 * gev-websocket that is hand-written C, because no Python spelling of a per-byte XOR comes
 * near memory speed (mypyc compiles a byte loop, but a loop of boxed-int indexing still costs
 * ~1 ns/byte; this costs ~0.1). The pure-Python fallback in _fastpath.py gives the same bytes
 * and is what runs when this module is absent (pure wheel, GEV_PURE_PYTHON=1).
 *
 * apply_mask(data, mask) -> bytes, data any contiguous bytes-like object, mask exactly 4 bytes.
 * Masking is an involution, so the same call masks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

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
    {
        const unsigned char *src = (const unsigned char *)data.buf;
        const unsigned char *key = (const unsigned char *)mask.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        Py_ssize_t n = data.len, i = 0;
        /* Eight bytes at a time: the key repeated twice, in memory order, so the XOR is right
         * whatever the byte order of the machine; memcpy keeps unaligned access defined. */
        uint64_t k64, chunk;
        memcpy(&k64, (unsigned char[8]){key[0], key[1], key[2], key[3],
                                        key[0], key[1], key[2], key[3]}, 8);
        for (; i + 8 <= n; i += 8) {
            memcpy(&chunk, src + i, 8);
            chunk ^= k64;
            memcpy(dst + i, &chunk, 8);
        }
        for (; i < n; i++)
            dst[i] = src[i] ^ key[i & 3];
    }
done:
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef unmask_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "apply_mask(data, mask) -> bytes\n\nXOR data with the 4-byte mask repeated."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef_Slot unmask_slots[] = {
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
