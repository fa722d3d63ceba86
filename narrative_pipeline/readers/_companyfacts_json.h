/* _companyfacts_json.h: strict JSON tokens over a bounded byte buffer, for
 * _companyfacts_scan.c (the why is in its header comment).
 *
 * Each function reads at the cursor and moves it past what it read, returning OK, DONE (the
 * end of an object or array), DECLINE (not strict JSON, or not handled: the caller gives the
 * document back to orjson) or ERROR (a Python exception is set). Every read is checked against
 * `end`; nesting is limited to MAX_DEPTH, which bounds the recursion of skip_value.
 */
#ifndef COMPANYFACTS_JSON_H
#define COMPANYFACTS_JSON_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>


#define MAX_DEPTH 64
enum { ERROR = -1, DECLINE = 0, OK = 1, DONE = 2 }; /* ERROR: a Python exception is set */

typedef struct {
    const unsigned char *p, *end;
} Cursor;

typedef struct { /* a string token: its bytes between the quotes, as written */
    const unsigned char *s;
    Py_ssize_t len;
    int escaped;
} Span;

/* ---- strict JSON tokens ---------------------------------------------------------------- */

static void skip_ws(Cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

static int peek(Cursor *c) /* the next non-blank byte, or -1 at the end */
{
    skip_ws(c);
    return c->p < c->end ? *c->p : -1;
}

static int literal(Cursor *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return DECLINE;
    c->p += n;
    return OK;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    unsigned v = 0;
    if (end - p < 4)
        return 0;
    for (int i = 0; i < 4; i++) {
        unsigned char h = p[i];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= h - '0';
        else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
        else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
        else return 0;
    }
    *out = v;
    return 1;
}

/* Length of the escape at p (p[0] == '\\'), 0 if invalid; a \u surrogate must be a pair. */
static int escape_length(const unsigned char *p, const unsigned char *end)
{
    unsigned v, low;
    if (end - p < 2)
        return 0;
    if (strchr("\"\\/bfnrt", p[1]) && p[1] != '\0')
        return 2;
    if (p[1] != 'u' || !hex4(p + 2, end, &v) || (v >= 0xDC00 && v <= 0xDFFF))
        return 0;
    if (v < 0xD800 || v > 0xDBFF)
        return 6;
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || !hex4(p + 8, end, &low))
        return 0;
    return (low >= 0xDC00 && low <= 0xDFFF) ? 12 : 0;
}

/* Length of the UTF-8 sequence at p (p[0] >= 0x80), 0 if invalid (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF). */
static int utf8_length(const unsigned char *p, const unsigned char *end)
{
    unsigned char b = p[0];
    int n;
    unsigned char lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
    if (b >= 0xC2 && b <= 0xDF) n = 2;
    else if (b >= 0xE0 && b <= 0xEF) n = 3;
    else if (b >= 0xF0 && b <= 0xF4) n = 4;
    else return 0;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
    if (end - p < n || p[1] < lo || p[1] > hi)
        return 0;
    for (int i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* PLAIN[b]: byte b stands for itself inside a string (printable ASCII but '"' and '\\'), so
 * string_token passes runs of them with one table look-up per byte. Filled by init_plain() at
 * module start; an unfilled table only makes string_token take its byte-by-byte path. */
static unsigned char PLAIN[256];

static void init_plain(void)
{
    for (int b = 0x20; b < 0x80; b++)
        PLAIN[b] = b != '"' && b != '\\';
}

/* The number of PLAIN bytes at p, 8 at a time where the compiler and byte order allow: each
 * byte of a word is tested at once for '"', '\\', < 0x20 and >= 0x80 (the lowest flagged
 * byte is exact: a borrow only runs upwards from a byte that is itself flagged). */
static Py_ssize_t plain_run(const unsigned char *p, const unsigned char *end)
{
    const unsigned char *first = p;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t w, quote, slash, flags;
        memcpy(&w, p, 8);
        quote = w ^ (ones * '"');
        slash = w ^ (ones * '\\');
        flags = ((quote - ones) & ~quote) | ((slash - ones) & ~slash) |
                ((w - ones * 0x20) & ~w) | w;
        flags &= highs;
        if (flags)
            return (p - first) + (__builtin_ctzll(flags) >> 3);
        p += 8;
    }
#endif
    while (p < end && PLAIN[*p])
        p++;
    return p - first;
}

/* A string at c->p (the opening quote): its content span; the cursor moves past it. */
static int string_token(Cursor *c, Span *out)
{
    const unsigned char *p = c->p + 1, *end = c->end;
    out->s = p;
    out->escaped = 0;
    while (p < end) {
        unsigned char ch;
        int n = 1;
        p += plain_run(p, end);
        if (p == end)
            break;
        ch = *p;
        if (ch == '"') {
            out->len = p - out->s;
            c->p = p + 1;
            return OK;
        }
        if (ch == '\\') {
            out->escaped = 1;
            n = escape_length(p, end);
        } else if (ch < 0x20) {
            n = 0;
        } else if (ch >= 0x80) {
            n = utf8_length(p, end);
        }
        if (!n)
            return DECLINE;
        p += n;
    }
    return DECLINE; /* unterminated */
}

static int digits(Cursor *c, uint64_t *m, int *count) /* one or more; *m saturates */
{
    const unsigned char *first = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (*m || *c->p != '0')
            ++*count; /* significant digits */
        if (*count <= 19)
            *m = *m * 10 + (*c->p - '0');
        c->p++;
    }
    return c->p > first ? OK : DECLINE;
}

/* A number at c->p in JSON's grammar. With `value`, also its double, as orjson reads it and
 * Arrow converts it: an integer token exactly (DECLINE past 2**53), a float correctly rounded
 * (DECLINE when infinite). */
static int number_token(Cursor *c, double *value)
{
    const unsigned char *first = c->p;
    uint64_t m = 0;
    int sig = 0, frac = 0, is_float = 0, negative = 0;
    long exp10 = 0;
    if (c->p < c->end && *c->p == '-') {
        negative = 1;
        c->p++;
    }
    if (c->p < c->end && *c->p == '0') { /* no leading zeros */
        c->p++;
    } else if (digits(c, &m, &sig) != OK) {
        return DECLINE;
    }
    if (c->p < c->end && *c->p == '.') {
        const unsigned char *dot = ++c->p;
        is_float = 1;
        if (digits(c, &m, &sig) != OK)
            return DECLINE;
        frac = (int)(c->p - dot);
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        int sign = 1;
        is_float = 1;
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            sign = *c->p++ == '-' ? -1 : 1;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return DECLINE;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (exp10 < 100000)
                exp10 = exp10 * 10 + (*c->p - '0');
            c->p++;
        }
        exp10 *= sign;
    }
    if (!value)
        return OK;
    const uint64_t max_exact = (uint64_t)1 << 53;
    if (!is_float) { /* orjson: an int; Arrow: exact below 2**53, else an error */
        if (sig > 16 || m > max_exact)
            return DECLINE;
        *value = m == 0 ? 0.0 : (negative ? -(double)m : (double)m); /* -0 is the int 0 */
        return OK;
    }
    exp10 -= frac;
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    double v;
    if (sig <= 19 && m <= max_exact && exp10 >= -22 && exp10 <= 22) {
        /* Both operands exact, one IEEE operation: correctly rounded (Clinger's fast path). */
        v = exp10 >= 0 ? (double)m * pow10[exp10] : (double)m / pow10[-exp10];
        *value = negative ? -v : v;
        return OK;
    }
    char text[64]; /* otherwise Python's own correctly rounded conversion of the token */
    size_t n = (size_t)(c->p - first);
    if (n >= sizeof text)
        return DECLINE;
    memcpy(text, first, n);
    text[n] = '\0';
    v = PyOS_string_to_double(text, NULL, NULL);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return DECLINE;
    }
    if (isinf(v))
        return DECLINE;
    *value = v;
    return OK;
}

/* Members of an object or array: call with *count = 0 just after the opening bracket.
 * OK: positioned at the next member's value (an object's key is read into *key and its
 * colon passed); DONE: the closing bracket was passed. */
static int next_member(Cursor *c, int *count, char close, Span *key)
{
    int ch = peek(c);
    if (ch == close) { /* after a comma it is not reached: a member is required below */
        c->p++;
        return DONE;
    }
    if (*count) {
        if (ch != ',')
            return DECLINE;
        c->p++;
        ch = peek(c);
    }
    ++*count;
    if (!key)
        return ch == -1 ? DECLINE : OK;
    if (ch != '"' || string_token(c, key) != OK || peek(c) != ':')
        return DECLINE;
    c->p++;
    skip_ws(c);
    return OK;
}

static int skip_value(Cursor *c, int depth)
{
    int ch = peek(c), count = 0, r;
    Span key;
    switch (ch) {
    case '{':
    case '[':
        if (depth >= MAX_DEPTH)
            return DECLINE;
        c->p++;
        while ((r = next_member(c, &count, ch == '{' ? '}' : ']', ch == '{' ? &key : NULL)) == OK)
            if ((r = skip_value(c, depth + 1)) != OK)
                return r;
        return r == DONE ? OK : r;
    case '"':
        return string_token(c, &key);
    case 't':
        return literal(c, "true");
    case 'f':
        return literal(c, "false");
    case 'n':
        return literal(c, "null");
    default:
        return (ch == '-' || (ch >= '0' && ch <= '9')) ? number_token(c, NULL) : DECLINE;
    }
}

static int is_key(const Span *key, const char *name)
{
    size_t n = strlen(name);
    return (size_t)key->len == n && memcmp(key->s, name, n) == 0;
}

/* A key as a Python str (NULL and no exception: an escaped key, not handled). */
static PyObject *key_text(const Span *key)
{
    if (key->escaped)
        return NULL;
    return PyUnicode_DecodeUTF8((const char *)key->s, key->len, "strict");
}

#endif
