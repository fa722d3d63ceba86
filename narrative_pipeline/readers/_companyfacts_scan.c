/* _companyfacts_scan.c: one SEC companyfacts document (bytes) -> fact columns, in one pass.
 *
 * Why this exists: whole-SEC ingestion (~1.1e8 fact entries, ~18 GB of JSON) is bound by
 * reading the JSON. A parser that builds a Python dict per fact entry (orjson, json) tops out
 * near 600k entries/s per core before any other work is done. This scanner walks the bytes
 * once and writes each fact's fields into C arrays, returned as `bytes` that Python wraps with
 * np.frombuffer, so Python only touches a few objects per concept.
 *
 * It is an accelerator, never a second set of semantics (companyfacts_native.py is its Python
 * side, companyfacts.py the behaviour):
 * - Above the fact lists it builds the dicts orjson would build (the `facts` object: namespace
 *   -> concept -> {"units": {unit: ...}}), with each fact list replaced by
 *   range(first_row, end_row) into the columns, so the reader's own Python code walks them.
 *   Other namespaces become {concept: None} (only their size is used); a value the reader
 *   does not look into becomes None.
 * - Per fact row: accn, end and start as int32 codes into per-document tables of distinct
 *   strings (-1: null or absent), the concept and the unit (as written) likewise, val as
 *   float64 (NaN: null or absent), and the byte span of the fact object (the filing fields
 *   form/fy/fp/filed are read by orjson from the span of the first fact of each accn, so they
 *   mean exactly what they meant before).
 * - `plain` says no key was repeated above the facts (a namespace, concept, "units" or unit
 *   given twice in one object). Then every row is in exactly one range, in row order, and
 *   Python can take the rows by concept without a step per fact list; otherwise it takes the
 *   ranges the dicts kept (orjson keeps a repeated key's last value).
 * - It returns None ("not handled") for anything it does not reproduce exactly; the caller
 *   then parses the document with orjson as before: anything that is not strict JSON (valid
 *   UTF-8, no NaN, nesting <= MAX_DEPTH), an escape in an object key or in accn/end/start, a
 *   fact that is not an object, accn/end/start that are not strings or null, a val that is
 *   not a number or null (text, booleans), an integer val beyond 2**53 or a float beyond the
 *   double range, a repeated accn/end/start/val in one fact, a namespace us-gaap/dei or a
 *   `facts` that is not an object, or `facts` given twice.
 * Safety: every read is checked against the end of the buffer, nesting is limited to
 * MAX_DEPTH (so the recursion is bounded), and document sizes are capped upstream
 * (NARRATIVE_MAX_DOCUMENT_MB); documents of 2 GiB or more are not handled. The JSON tokens
 * (strings, numbers, skipping a value) are in _companyfacts_json.h.
 */
#include "_companyfacts_json.h"

typedef struct { /* a growable array */
    char *data;
    size_t len, cap;
} Buffer;

typedef struct { /* distinct strings of one field, and each row's code into them */
    int32_t *slots;  /* open addressing: code + 1, 0 = empty */
    size_t nslots;   /* a power of two, at least twice the number of strings */
    Buffer strings;  /* per code: a Span (pointing into the document) */
    Buffer scopes;   /* per code: int64, the object it was last a key of (concept, unit) */
    Buffer codes;    /* per row: int32 */
    Span last;       /* the string of the previous add_text, and its code: facts in a row */
    int32_t last_code; /* often repeat accn/end/start, so no hash for them */
} TextColumn;

typedef struct {
    Cursor c;
    const unsigned char *doc;
    TextColumn accn, end, start, concept, unit;
    Buffer values; /* per row: double */
    Buffer spans;  /* per row: int64 first byte, int64 one past the last byte */
    Py_ssize_t rows;
    int32_t concept_code, unit_code; /* of the fact list being read */
    int64_t scopes; /* objects whose keys were interned so far */
    int repeated;   /* a key repeated where rows are: some rows may be replaced in the dicts */
    int namespaces; /* bits: us-gaap, dei seen */
    const Span *key; /* the key whose value scan_dict is reading */
} Scan;

static int push(Buffer *b, const void *item, size_t size)
{
    if (b->len + size > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + size)
            cap *= 2;
        char *data = PyMem_Realloc(b->data, cap);
        if (!data) {
            PyErr_NoMemory();
            return ERROR;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, item, size);
    b->len += size;
    return OK;
}

/* ---- fact rows --------------------------------------------------------------------------- */

static uint64_t hash(const unsigned char *s, Py_ssize_t n) /* 8 bytes a step, mixed */
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n, w;
    for (; n >= 8; s += 8, n -= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 32;
    }
    if (n > 0) {
        w = 0;
        memcpy(&w, s, (size_t)n);
        h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
    }
    return h ^ (h >> 29);
}

static int grow_slots(TextColumn *t)
{
    size_t n = t->nslots ? t->nslots * 2 : 256;
    int32_t *slots = PyMem_Calloc(n, sizeof(int32_t));
    Span *strings = (Span *)t->strings.data;
    int32_t count = (int32_t)(t->strings.len / sizeof(Span));
    if (!slots) {
        PyErr_NoMemory();
        return ERROR;
    }
    for (int32_t code = 0; code < count; code++) {
        size_t i = hash(strings[code].s, strings[code].len) & (n - 1);
        while (slots[i])
            i = (i + 1) & (n - 1);
        slots[i] = code + 1;
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->nslots = n;
    return OK;
}

/* Whether the spans are the same bytes (short ones, as accn and dates are, by 8-byte words
 * rather than a call to memcmp). */
static int same_text(const Span *a, const Span *b)
{
    Py_ssize_t n = a->len, i;
    uint64_t x, y;
    if (n != b->len)
        return 0;
    if (n < 8 || n > 32)
        return memcmp(a->s, b->s, (size_t)n) == 0;
    for (i = 0; i + 8 < n; i += 8) {
        memcpy(&x, a->s + i, 8);
        memcpy(&y, b->s + i, 8);
        if (x != y)
            return 0;
    }
    memcpy(&x, a->s + n - 8, 8); /* the last 8 bytes (overlapping the previous word) */
    memcpy(&y, b->s + n - 8, 8);
    return x == y;
}

/* The code of the string `s` in t (added if new). With a scope >= 0 (the object whose key
 * s is), *repeated is set when s was already a key of that same object. */
static int intern(TextColumn *t, const Span *s, int64_t scope, int *repeated, int32_t *code)
{
    size_t count = t->strings.len / sizeof(Span);
    if (2 * (count + 1) > t->nslots && grow_slots(t) != OK)
        return ERROR;
    Span *strings = (Span *)t->strings.data;
    size_t i = hash(s->s, s->len) & (t->nslots - 1);
    while (t->slots[i]) {
        Span *seen = &strings[t->slots[i] - 1];
        if (same_text(seen, s))
            break;
        i = (i + 1) & (t->nslots - 1);
    }
    if (!t->slots[i]) {
        int64_t never = -1;
        if (push(&t->strings, s, sizeof(Span)) != OK || push(&t->scopes, &never, 8) != OK)
            return ERROR;
        t->slots[i] = (int32_t)count + 1;
    }
    *code = t->slots[i] - 1;
    if (scope >= 0) {
        int64_t *scopes = (int64_t *)t->scopes.data;
        *repeated |= scopes[*code] == scope;
        scopes[*code] = scope;
    }
    return OK;
}

/* This row's code for the string `s`, or -1 when s is NULL (null or absent). */
static int add_text(TextColumn *t, const Span *s)
{
    int32_t code = -1;
    if (s && t->last.s && same_text(s, &t->last)) {
        code = t->last_code;
    } else if (s) {
        if (intern(t, s, -1, NULL, &code) != OK)
            return ERROR;
        t->last = *s;
        t->last_code = code;
    }
    return push(&t->codes, &code, sizeof code);
}

/* accn/end/start: a string without escapes (*out set) or null (*out NULL). */
static int text_field(Cursor *c, Span *value, const Span **out)
{
    *out = NULL;
    if (peek(c) == 'n')
        return literal(c, "null");
    if (peek(c) != '"' || string_token(c, value) != OK || value->escaped)
        return DECLINE;
    *out = value;
    return OK;
}

/* One fact object at c->p: one row. */
static int scan_fact(Scan *s)
{
    Cursor *c = &s->c;
    const unsigned char *first = c->p;
    Span key, accn, end, start;
    const Span *fields[3] = {NULL, NULL, NULL};
    double val = Py_NAN;
    int count = 0, seen = 0, r, bit;
    c->p++;
    while ((r = next_member(c, &count, '}', &key)) == OK) {
        if (key.escaped)
            return DECLINE; /* it could spell a field's name */
        bit = is_key(&key, "accn") ? 1 : is_key(&key, "end") ? 2 : is_key(&key, "start") ? 4
            : is_key(&key, "val") ? 8 : 0;
        if (bit & seen)
            return DECLINE; /* a repeated field: orjson keeps the last, not handled */
        seen |= bit;
        if (bit == 1) r = text_field(c, &accn, &fields[0]);
        else if (bit == 2) r = text_field(c, &end, &fields[1]);
        else if (bit == 4) r = text_field(c, &start, &fields[2]);
        else if (bit == 8 && peek(c) == 'n') r = literal(c, "null");
        else if (bit == 8) r = (peek(c) == '-' || (peek(c) >= '0' && peek(c) <= '9'))
                               ? number_token(c, &val) : DECLINE;
        else r = skip_value(c, 6);
        if (r != OK)
            return r;
    }
    if (r != DONE)
        return r;
    int64_t span[2] = {first - s->doc, c->p - s->doc};
    if (add_text(&s->accn, fields[0]) != OK || add_text(&s->end, fields[1]) != OK ||
        add_text(&s->start, fields[2]) != OK || push(&s->values, &val, sizeof val) != OK ||
        push(&s->spans, span, sizeof span) != OK ||
        push(&s->concept.codes, &s->concept_code, sizeof(int32_t)) != OK ||
        push(&s->unit.codes, &s->unit_code, sizeof(int32_t)) != OK)
        return ERROR;
    s->rows++;
    return OK;
}

/* ---- the dicts above the fact lists ------------------------------------------------------ */

typedef int (*ValueScanner)(Scan *s, PyObject **out);

/* An object whose values `each` turns into Python objects -> a dict, as orjson builds it
 * (a repeated key keeps its first position and its last value). With `keys`, each key is
 * also interned there and its code left in *key_code while its value is read. */
static int scan_dict(Scan *s, ValueScanner each, TextColumn *keys, int32_t *key_code,
                     PyObject **out)
{
    Span key;
    int count = 0, r;
    int64_t scope = s->scopes++;
    PyObject *dict = PyDict_New();
    if (!dict)
        return ERROR;
    s->c.p++; /* the '{' */
    while ((r = next_member(&s->c, &count, '}', &key)) == OK) {
        PyObject *name = key_text(&key), *value = NULL;
        if (!name) {
            r = PyErr_Occurred() ? ERROR : DECLINE;
            break;
        }
        s->key = &key;
        r = keys ? intern(keys, &key, scope, &s->repeated, key_code) : OK;
        if (r == OK)
            r = each(s, &value);
        if (r == OK && PyDict_SetItem(dict, name, value) < 0)
            r = ERROR;
        Py_DECREF(name);
        Py_XDECREF(value);
        if (r != OK)
            break;
    }
    if (r != DONE) {
        Py_DECREF(dict);
        return r;
    }
    *out = dict;
    return OK;
}

static int none(Scan *s, PyObject **out) /* a value the reader does not look into */
{
    int r = skip_value(&s->c, 4);
    if (r == OK)
        *out = Py_NewRef(Py_None);
    return r;
}

static int fact_list(Scan *s, PyObject **out) /* a unit's facts -> range(first, end) rows */
{
    Py_ssize_t first = s->rows;
    int count = 0, r;
    if (peek(&s->c) != '[')
        return none(s, out);
    s->c.p++;
    while ((r = next_member(&s->c, &count, ']', NULL)) == OK) {
        if (peek(&s->c) != '{')
            return DECLINE; /* a fact that is not an object */
        if ((r = scan_fact(s)) != OK)
            return r;
    }
    if (r != DONE)
        return r;
    *out = PyObject_CallFunction((PyObject *)&PyRange_Type, "nn", first, s->rows);
    return *out ? OK : ERROR;
}

static int units(Scan *s, PyObject **out)
{
    return peek(&s->c) == '{' ? scan_dict(s, fact_list, &s->unit, &s->unit_code, out)
                              : none(s, out);
}

static int concept_body(Scan *s, PyObject **out) /* {"units": ...}: the one key read */
{
    Span key;
    int count = 0, r, seen = 0;
    if (peek(&s->c) != '{')
        return none(s, out);
    PyObject *body = PyDict_New(), *value = NULL;
    if (!body)
        return ERROR;
    s->c.p++;
    while ((r = next_member(&s->c, &count, '}', &key)) == OK) {
        if (key.escaped) {
            r = DECLINE;
            break;
        }
        if (!is_key(&key, "units")) {
            if ((r = skip_value(&s->c, 4)) != OK)
                break;
            continue;
        }
        s->repeated |= seen++;
        if ((r = units(s, &value)) != OK)
            break;
        r = PyDict_SetItemString(body, "units", value) < 0 ? ERROR : OK;
        Py_CLEAR(value);
        if (r != OK)
            break;
    }
    if (r != DONE) {
        Py_DECREF(body);
        return r;
    }
    *out = body;
    return OK;
}

/* A namespace's concepts: us-gaap and dei read, the others only sized. */
static int namespace(Scan *s, PyObject **out)
{
    int bit = is_key(s->key, "us-gaap") ? 1 : is_key(s->key, "dei") ? 2 : 0;
    s->repeated |= (s->namespaces & bit) != 0;
    s->namespaces |= bit;
    if (peek(&s->c) != '{')
        return bit ? DECLINE : none(s, out);
    return bit ? scan_dict(s, concept_body, &s->concept, &s->concept_code, out)
               : scan_dict(s, none, NULL, NULL, out);
}

static int namespaces(Scan *s, PyObject **out) /* the `facts` object */
{
    return peek(&s->c) == '{' ? scan_dict(s, namespace, NULL, NULL, out) : DECLINE;
}

/* The document: an object holding `facts` once, then nothing but blanks. */
static int document(Scan *s, PyObject **facts)
{
    Span key;
    int count = 0, r;
    *facts = NULL;
    if (peek(&s->c) != '{')
        return DECLINE;
    s->c.p++;
    while ((r = next_member(&s->c, &count, '}', &key)) == OK) {
        if (key.escaped || (is_key(&key, "facts") && *facts))
            r = DECLINE;
        else if (is_key(&key, "facts"))
            r = namespaces(s, facts);
        else
            r = skip_value(&s->c, 1);
        if (r != OK)
            break;
    }
    if (r == DONE && *facts && peek(&s->c) == -1)
        return OK;
    Py_CLEAR(*facts);
    return r == DONE ? DECLINE : r;
}

/* ---- the module -------------------------------------------------------------------------- */

static PyObject *as_bytes(const Buffer *b)
{
    return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
}

static PyObject *texts(const TextColumn *t) /* the distinct strings, by code */
{
    const Span *strings = (const Span *)t->strings.data;
    Py_ssize_t n = (Py_ssize_t)(t->strings.len / sizeof(Span));
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list && i < n; i++) {
        PyObject *text = PyUnicode_DecodeUTF8((const char *)strings[i].s, strings[i].len, "strict");
        if (!text) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, text);
    }
    return list;
}

static void free_column(TextColumn *t)
{
    PyMem_Free(t->slots);
    PyMem_Free(t->strings.data);
    PyMem_Free(t->scopes.data);
    PyMem_Free(t->codes.data);
}

static PyObject *scan(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    PyObject *facts = NULL, *out = NULL;
    Scan s;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    memset(&s, 0, sizeof s);
    s.doc = s.c.p = view.buf;
    s.c.end = s.doc + view.len;
    int r = view.len < INT32_MAX ? document(&s, &facts) : DECLINE;
    if (r == OK)
        out = Py_BuildValue("(NNNNNNNNNNNNNN)", facts, as_bytes(&s.values),
                            as_bytes(&s.accn.codes), texts(&s.accn), as_bytes(&s.end.codes),
                            texts(&s.end), as_bytes(&s.start.codes), texts(&s.start),
                            as_bytes(&s.concept.codes), texts(&s.concept),
                            as_bytes(&s.unit.codes), texts(&s.unit), as_bytes(&s.spans),
                            PyBool_FromLong(!s.repeated));
    else if (r == DECLINE)
        out = Py_NewRef(Py_None);
    free_column(&s.accn);
    free_column(&s.end);
    free_column(&s.start);
    free_column(&s.concept);
    free_column(&s.unit);
    PyMem_Free(s.values.data);
    PyMem_Free(s.spans.data);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "scan(document: bytes) -> None (not handled: parse it with orjson) or (facts, values, "
     "accn_codes, accn_texts, end_codes, end_texts, start_codes, start_texts, concept_codes, "
     "concept_texts, unit_codes, unit_texts, spans, plain)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_companyfacts_scan",
                                    "Native scanner of one companyfacts document.", -1, methods};

PyMODINIT_FUNC PyInit__companyfacts_scan(void)
{
    init_plain();
    return PyModule_Create(&module);
}
