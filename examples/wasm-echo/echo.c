/* A WASM connector in C: echo the "input" of the payload back as the output.
 *
 * Hookhub writes {"config": ..., "input": ..., "context": ...} on stdin; a connector answers
 * {"output": ...} or {"error": {"message": ..., "retryable": bool}} on stdout. This example
 * does no JSON parsing beyond finding the top-level "input" member, and copies its value
 * verbatim. With {"config": {"fail": true}} it answers a retryable error instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Read all of stdin into a NUL-terminated buffer. */
static char *read_all(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n - 1, stdin);
        n += got;
        if (got == 0) break;
        if (cap - n - 1 == 0) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) { free(buf); return NULL; }
            buf = bigger;
            cap *= 2;
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Skip whitespace. */
static const char *ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Return the end of the JSON string starting at p (which points at the opening quote). */
static const char *skip_string(const char *p) {
    for (p++; *p && *p != '"'; p++)
        if (*p == '\\' && p[1]) p++;
    return *p ? p + 1 : NULL;
}

/* Return the end of the JSON value starting at p, or NULL when it is malformed. */
static const char *skip_value(const char *p) {
    p = ws(p);
    if (*p == '"') return skip_string(p);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (*p) {
            if (*p == '"') {
                p = skip_string(p);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (*p && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n') p++;
    return p;
}

/* Find the top-level member `name` of the object at p; set *end to the end of its value. */
static const char *member(const char *p, const char *name, const char **end) {
    size_t len = strlen(name);
    p = ws(p);
    if (*p != '{') return NULL;
    p = ws(p + 1);
    while (*p == '"') {
        const char *key = p + 1, *after = skip_string(p);
        if (!after) return NULL;
        p = ws(after);
        if (*p != ':') return NULL;
        const char *value = ws(p + 1), *stop = skip_value(value);
        if (!stop) return NULL;
        if ((size_t)(after - key - 1) == len && strncmp(key, name, len) == 0) {
            *end = stop;
            return value;
        }
        p = ws(stop);
        if (*p == ',') p = ws(p + 1);
    }
    return NULL;
}

int main(void) {
    size_t len;
    const char *end, *cend;
    char *doc = read_all(&len);
    if (!doc) {
        puts("{\"error\": {\"message\": \"out of memory\", \"retryable\": false}}");
        return 0;
    }
    const char *config = member(doc, "config", &cend);
    if (config) {
        const char *fend, *fail = member(config, "fail", &fend);
        if (fail && strncmp(fail, "true", 4) == 0) {
            puts("{\"error\": {\"message\": \"asked to fail\", \"retryable\": true}}");
            return 0;
        }
    }
    const char *input = member(doc, "input", &end);
    if (!input) {
        puts("{\"output\": null}");
        return 0;
    }
    printf("{\"output\": %.*s}\n", (int)(end - input), input);
    return 0;
}
