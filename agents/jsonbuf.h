/* A growable text buffer with JSON string escaping, shared by the C agents. */
#ifndef JSONBUF_H
#define JSONBUF_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static void buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) {
        fputs("out of memory\n", stderr);
        exit(3);
    }
    b->data = grown;
    b->cap = cap;
}

static void buf_printf(Buf *b, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int need = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    if (need < 0) return;
    buf_reserve(b, (size_t)need);
    va_start(args, fmt);
    vsnprintf(b->data + b->len, (size_t)need + 1, fmt, args);
    va_end(args);
    b->len += (size_t)need;
}

/* Appends `s` as a quoted JSON string. */
static void buf_json_string(Buf *b, const char *s, size_t n) {
    buf_printf(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') buf_printf(b, "\\%c", c);
        else if (c == '\n') buf_printf(b, "\\n");
        else if (c == '\t') buf_printf(b, "\\t");
        else if (c < 0x20) buf_printf(b, "\\u%04x", c);
        else buf_printf(b, "%c", c);
    }
    buf_printf(b, "\"");
}

/* Writes the buffer to stdout and to `path`; returns 0 on success. */
static int buf_emit(const Buf *b, const char *path) {
    fwrite(b->data, 1, b->len, stdout);
    FILE *out = fopen(path, "wb");
    if (!out) return -1;
    size_t written = fwrite(b->data, 1, b->len, out);
    return (fclose(out) == 0 && written == b->len) ? 0 : -1;
}

/* Reads a whole file; returns NULL on failure. */
static char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    Buf b = {0};
    static char chunk[65536]; /* static: the default wasm shadow stack is only 64 KiB */
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        buf_reserve(&b, n);
        memcpy(b.data + b.len, chunk, n);
        b.len += n;
    }
    fclose(f);
    buf_reserve(&b, 0);
    b.data[b.len] = '\0';
    *size = b.len;
    return b.data;
}

#endif
