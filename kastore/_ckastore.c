/*
 * _ckastore: the C engine's Python extension, a thin layer over kastore.c.
 *
 * load(fd, utf8_keys, lazy=False) reads one store from a file descriptor's
 * position and returns (data, keys, types, offsets, lengths, size): data
 * exports the bytes after the header as a read-only buffer, which the Python
 * side wraps in a Store; offsets are relative to that buffer. Keys are str when
 * utf8_keys is true, bytes otherwise. With lazy (a regular file), only the
 * header, descriptors and keys are read and checked: data is None and the
 * offsets are from the start of the store, for the caller to map the file.
 *
 * loads(buffer) does the same from bytes in memory.
 *
 * dump(fd, keys, values) writes keys (str or bytes) and values (objects with
 * a one-dimensional, C-contiguous, little-endian buffer of a kastore type) to
 * the descriptor. A value it cannot take as it is raises Unsupported, and the
 * Python side converts the values and calls again.
 *
 * KAS_ERR_* codes come back as Error(code, message); the Python side maps
 * them to kastore's exceptions in one place. The buffer protocol is used
 * instead of numpy's C API, so building this needs no numpy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kastore.h"

static PyObject *ErrorType;       /* _ckastore.Error */
static PyObject *UnsupportedType; /* _ckastore.Unsupported */

/* --- errors -------------------------------------------------------------- */

static PyObject *
raise_kas(int code)
{
    if (code == KAS_ERR_IO && errno != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (code == KAS_ERR_NO_MEMORY) {
        return PyErr_NoMemory();
    }
    PyObject *args = Py_BuildValue("(is)", code, kas_strerror(code));
    if (args != NULL) {
        PyErr_SetObject(ErrorType, args);
        Py_DECREF(args);
    }
    return NULL;
}

/* A stdio stream on a duplicate of fd: closing it leaves fd open, and the
 * shared file offset moves exactly as far as the stream reads or writes. */
static FILE *
stream_on(int fd, const char *mode)
{
    int copy = dup(fd);
    if (copy < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    FILE *file = fdopen(copy, mode);
    if (file == NULL) {
        close(copy);
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    return file;
}

/* --- the data of a loaded store ------------------------------------------ */

typedef struct {
    PyObject_HEAD kastore_t store;
    char *start; /* the bytes after the header */
    Py_ssize_t size;
} StoreData;

static void
StoreData_dealloc(StoreData *self)
{
    kastore_close(&self->store);
    Py_TYPE(self)->tp_free((PyObject *) self);
}

static int
StoreData_getbuffer(StoreData *self, Py_buffer *view, int flags)
{
    static char empty[1];
    char *start = self->start != NULL ? self->start : empty;
    return PyBuffer_FillInfo(view, (PyObject *) self, start, self->size, 1, flags);
}

static PyBufferProcs StoreData_as_buffer = {
    .bf_getbuffer = (getbufferproc) StoreData_getbuffer,
};

static PyTypeObject StoreDataType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "kastore._ckastore.StoreData",
    .tp_basicsize = sizeof(StoreData),
    .tp_dealloc = (destructor) StoreData_dealloc,
    .tp_as_buffer = &StoreData_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The bytes of a store read by the C engine, after its header.",
};

/* Read one store from file into a new StoreData and describe it. */
static PyObject *
load_from(FILE *file, int utf8_keys, int lazy)
{
    StoreData *data = PyObject_New(StoreData, &StoreDataType);
    if (data == NULL) {
        return NULL;
    }
    memset(&data->store, 0, sizeof(data->store));
    data->start = NULL;
    data->size = 0;
    int ret;
    errno = 0;
    Py_BEGIN_ALLOW_THREADS ret = kastore_openf(&data->store, file, "r", lazy ? 0 : KAS_READ_ALL);
    Py_END_ALLOW_THREADS
    /* Everything is read: the store never touches the stream again. */
    data->store.file = NULL;
    if (ret != 0) {
        raise_kas(ret);
        Py_DECREF(data);
        return NULL;
    }
    kastore_t *store = &data->store;
    size_t n = store->num_items;
    data->start = store->read_buffer;
    data->size = (Py_ssize_t) (store->file_size - KAS_HEADER_SIZE);

    PyObject *keys = PyList_New((Py_ssize_t) n);
    PyObject *types = PyBytes_FromStringAndSize(NULL, (Py_ssize_t) n);
    PyObject *offsets = PyBytes_FromStringAndSize(NULL, (Py_ssize_t) (8 * n));
    PyObject *lengths = PyBytes_FromStringAndSize(NULL, (Py_ssize_t) (8 * n));
    if (keys == NULL || types == NULL || offsets == NULL || lengths == NULL) {
        goto fail;
    }
    char *type_out = PyBytes_AS_STRING(types);
    uint64_t offset, length;
    for (size_t i = 0; i < n; i++) {
        const kaitem_t *item = &store->items[i];
        PyObject *key = utf8_keys
                            ? PyUnicode_DecodeUTF8(item->key, (Py_ssize_t) item->key_len, NULL)
                            : PyBytes_FromStringAndSize(item->key, (Py_ssize_t) item->key_len);
        if (key == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(keys, (Py_ssize_t) i, key);
        type_out[i] = (char) item->type;
        offset = lazy ? (uint64_t) item->array_start
                      : (uint64_t) ((const char *) item->array - data->start);
        length = (uint64_t) item->array_len;
        memcpy(PyBytes_AS_STRING(offsets) + 8 * i, &offset, 8);
        memcpy(PyBytes_AS_STRING(lengths) + 8 * i, &length, 8);
    }
    unsigned long long size = (unsigned long long) store->file_size;
    if (lazy) {
        /* Only the layout was read: the caller maps the file for the arrays. */
        Py_DECREF(data);
        Py_INCREF(Py_None);
        return Py_BuildValue("(NNNNNK)", Py_None, keys, types, offsets, lengths, size);
    }
    return Py_BuildValue("(NNNNNK)", (PyObject *) data, keys, types, offsets, lengths, size);
fail:
    Py_XDECREF(keys);
    Py_XDECREF(types);
    Py_XDECREF(offsets);
    Py_XDECREF(lengths);
    Py_DECREF(data);
    return NULL;
}

static PyObject *
ckastore_load(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd, utf8_keys, lazy = 0;
    if (!PyArg_ParseTuple(args, "ip|p", &fd, &utf8_keys, &lazy)) {
        return NULL;
    }
    FILE *file = stream_on(fd, "rb");
    if (file == NULL) {
        return NULL;
    }
    /* Unbuffered: read exactly the store's bytes and not one more, so the
     * descriptor is left just after it (stores back to back, pipes). */
    setvbuf(file, NULL, _IONBF, 0);
    PyObject *result = load_from(file, utf8_keys, lazy);
    fclose(file);
    return result;
}

static PyObject *
ckastore_loads(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer buffer;
    int utf8_keys;
    if (!PyArg_ParseTuple(args, "y*p", &buffer, &utf8_keys)) {
        return NULL;
    }
    PyObject *result = NULL;
    if (buffer.len == 0) {
        raise_kas(KAS_ERR_EOF);
    } else {
        FILE *file = fmemopen(buffer.buf, (size_t) buffer.len, "rb");
        if (file == NULL) {
            PyErr_SetFromErrno(PyExc_OSError);
        } else {
            result = load_from(file, utf8_keys, 0);
            fclose(file);
        }
    }
    PyBuffer_Release(&buffer);
    return result;
}

/* --- writing ------------------------------------------------------------- */

/* The kastore type of a buffer format with this item size, or -1. */
static int
type_code(const char *format, Py_ssize_t itemsize)
{
    if (format == NULL) {
        return itemsize == 1 ? KAS_UINT8 : -1;
    }
    if (*format == '<' || *format == '=' || *format == '@') {
        format++;
    }
    if (format[0] == '\0' || format[1] != '\0') {
        return -1;
    }
    switch (format[0]) {
        case 'b':
        case 'h':
        case 'i':
        case 'l':
        case 'q':
            switch (itemsize) {
                case 1: return KAS_INT8;
                case 2: return KAS_INT16;
                case 4: return KAS_INT32;
                case 8: return KAS_INT64;
            }
            return -1;
        case 'B':
        case 'H':
        case 'I':
        case 'L':
        case 'Q':
            switch (itemsize) {
                case 1: return KAS_UINT8;
                case 2: return KAS_UINT16;
                case 4: return KAS_UINT32;
                case 8: return KAS_UINT64;
            }
            return -1;
        case 'f':
            return itemsize == 4 ? KAS_FLOAT32 : -1;
        case 'd':
            return itemsize == 8 ? KAS_FLOAT64 : -1;
    }
    return -1;
}

static PyObject *
unsupported(Py_ssize_t index)
{
    PyErr_SetObject(UnsupportedType, PyLong_FromSsize_t(index));
    return NULL;
}

typedef struct {
    const char *key;
    Py_ssize_t key_len;
    const void *array;
    size_t array_len;
    int type;
} Item;

/* Totals at least this large are written with the GIL released, and their
 * buffers are held until then; smaller ones to a regular file are written
 * holding the GIL, which spares holding a buffer per array. */
#define RELEASE_GIL_BYTES (16 << 20)

/* Check values[i] and note where its bytes are; view receives its buffer.
 * Keys are str, or bytes already encoded when encoded_keys is set: never a mix,
 * so a bytes key among str keys is refused like any other non-str key. */
static int
take_value(PyObject *keys, PyObject *values, Py_ssize_t i, int encoded_keys, Item *item,
    Py_buffer *view)
{
    PyObject *key = PyList_GET_ITEM(keys, i);
    if (!encoded_keys && PyUnicode_Check(key)) {
        item->key = PyUnicode_AsUTF8AndSize(key, &item->key_len);
        if (item->key == NULL) {
            return -1;
        }
    } else if (encoded_keys && PyBytes_Check(key)) {
        item->key = PyBytes_AS_STRING(key);
        item->key_len = PyBytes_GET_SIZE(key);
    } else {
        unsupported(i);
        return -1;
    }
    if (item->key_len == 0) {
        unsupported(i);
        return -1;
    }
    if (PyObject_GetBuffer(PyList_GET_ITEM(values, i), view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        != 0) {
        PyErr_Clear();
        unsupported(i);
        return -1;
    }
    item->type = view->ndim == 1 ? type_code(view->format, view->itemsize) : -1;
    if (item->type < 0) {
        PyBuffer_Release(view);
        unsupported(i);
        return -1;
    }
    item->array = view->buf;
    item->array_len = (size_t) (view->len / view->itemsize);
    return 0;
}

static PyObject *
ckastore_dump(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd;
    int encoded_keys = 0;
    PyObject *keys, *values;
    if (!PyArg_ParseTuple(
            args, "iO!O!|p", &fd, &PyList_Type, &keys, &PyList_Type, &values, &encoded_keys)) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(values) != n) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in length");
        return NULL;
    }
    PyObject *result = NULL;
    Py_buffer *views = NULL;
    Py_ssize_t held = 0;
    Item *items = PyMem_Malloc(((size_t) n + 1) * sizeof(Item));
    FILE *file = NULL;
    size_t total = 0;
    int ret;
    if (items == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    /* Everything is checked before anything is written: a value this cannot
     * take raises Unsupported with nothing written, and the caller retries.
     * While the GIL is held no other thread can free or resize a value (the
     * list holds them), so each buffer is let go as soon as it is noted. */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        if (take_value(keys, values, i, encoded_keys, &items[i], &view) != 0) {
            goto out;
        }
        total += (size_t) view.len;
        PyBuffer_Release(&view);
    }
    /* A pipe or socket may wait on a reader in another thread of this process,
     * which needs the GIL: only a regular file is written holding it. */
    struct stat st;
    int release_gil = total >= RELEASE_GIL_BYTES || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode);
    if (release_gil) {
        /* Other threads will run while writing: hold every buffer until done. */
        views = PyMem_Calloc((size_t) n + 1, sizeof(Py_buffer));
        if (views == NULL) {
            PyErr_NoMemory();
            goto out;
        }
        for (; held < n; held++) {
            if (take_value(keys, values, held, encoded_keys, &items[held], &views[held]) != 0) {
                goto out;
            }
        }
    }
    file = stream_on(fd, "wb");
    if (file == NULL) {
        goto out;
    }
    kastore_t store;
    errno = 0;
    ret = kastore_openf(&store, file, "w", 0);
    for (Py_ssize_t i = 0; ret == 0 && i < n; i++) {
        ret = kastore_put(&store, items[i].key, (size_t) items[i].key_len, items[i].array,
            items[i].array_len, items[i].type, KAS_BORROWS_ARRAY);
    }
    /* kastore_close writes the file (in write mode), then frees the store. */
    PyThreadState *state = release_gil ? PyEval_SaveThread() : NULL;
    int closed = kastore_close(&store);
    if (ret == 0) {
        ret = closed;
    }
    if (ret == 0 && fflush(file) != 0) {
        ret = KAS_ERR_IO;
    }
    if (state != NULL) {
        PyEval_RestoreThread(state);
    }
    if (ret != 0) {
        raise_kas(ret);
        goto out;
    }
    result = Py_None;
    Py_INCREF(result);
out:
    if (file != NULL && fclose(file) != 0 && result != NULL) {
        Py_CLEAR(result);
        PyErr_SetFromErrno(PyExc_OSError);
    }
    for (Py_ssize_t i = 0; i < held; i++) {
        PyBuffer_Release(&views[i]);
    }
    PyMem_Free(views);
    PyMem_Free(items);
    return result;
}

static PyObject *
ckastore_version(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(args))
{
    kas_version_t version = kas_version();
    return Py_BuildValue("(iii)", version.major, version.minor, version.patch);
}

static PyMethodDef methods[] = {
    { "load", ckastore_load, METH_VARARGS, "Read one store from a file descriptor." },
    { "loads", ckastore_loads, METH_VARARGS, "Read one store from a buffer." },
    { "dump", ckastore_dump, METH_VARARGS, "Write keys and values to a file descriptor." },
    { "version", ckastore_version, METH_NOARGS, "The C library's version." },
    { NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kastore._ckastore",
    .m_doc = "The kastore C engine.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__ckastore(void)
{
    if (PyType_Ready(&StoreDataType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    ErrorType = PyErr_NewException("kastore._ckastore.Error", NULL, NULL);
    UnsupportedType = PyErr_NewException("kastore._ckastore.Unsupported", NULL, NULL);
    if (ErrorType == NULL || UnsupportedType == NULL
        || PyModule_AddObjectRef(m, "Error", ErrorType) < 0
        || PyModule_AddObjectRef(m, "Unsupported", UnsupportedType) < 0
        || PyModule_AddObjectRef(m, "StoreData", (PyObject *) &StoreDataType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
