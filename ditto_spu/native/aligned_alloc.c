/*
 * 64-byte-aligned malloc family, preloaded with LD_PRELOAD.
 *
 * Why: the Eigen copy inside stock SPU 0.9.5 (libspu.so) is built assuming malloc
 * returns blocks aligned for AVX, and its uint32 GEMM packing (used by FM32 matmuls)
 * does aligned 32-byte stores into such blocks. glibc malloc only guarantees 16 bytes,
 * so moderately sized FM32 matmuls die with SIGSEGV. Serving every malloc/calloc/realloc
 * from __libc_memalign(64, n) removes the crash. free() is glibc's own: memalign'd
 * blocks are ordinary heap chunks for it.
 *
 * The exported symbol `ditto_spu_aligned_allocator_active` lets the Python side check
 * that this library really is loaded in the process.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <malloc.h>

#define DITTO_ALIGNMENT 64

extern void *__libc_memalign(size_t alignment, size_t size);
extern void __libc_free(void *ptr);

__attribute__((visibility("default"))) int ditto_spu_aligned_allocator_active = 1;

void *malloc(size_t size) {
    return __libc_memalign(DITTO_ALIGNMENT, size ? size : 1);
}

void *calloc(size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    /* Not malloc(): the compiler would fuse malloc+memset into a call to calloc,
     * i.e. into this very function. */
    void *ptr = __libc_memalign(DITTO_ALIGNMENT, total ? total : 1);
    if (ptr != NULL) memset(ptr, 0, total);
    return ptr;
}

void *realloc(void *ptr, size_t size) {
    if (ptr == NULL) return malloc(size);
    if (size == 0) {
        __libc_free(ptr);
        return NULL;
    }
    size_t old_size = malloc_usable_size(ptr);
    if (old_size >= size && ((uintptr_t)ptr % DITTO_ALIGNMENT) == 0) return ptr;
    void *fresh = malloc(size);
    if (fresh == NULL) return NULL;
    memcpy(fresh, ptr, old_size < size ? old_size : size);
    __libc_free(ptr);
    return fresh;
}

void *reallocarray(void *ptr, size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(ptr, total);
}

void *valloc(size_t size) { return __libc_memalign(4096, size ? size : 1); }
