/* Internal: every operating-system call of the arena, behind one layer. */
#ifndef THEUS_HEAVY_OS_H
#define THEUS_HEAVY_OS_H

#include <stddef.h>
#include <stdint.h>

/* Creates an anonymous memfd of `size` bytes (sparse), sealed against
 * shrinking and growing. Returns 0 or a negative THEUS_E code. */
int theus__os_memfd(const char *name, uint64_t size, int *fd);
/* Opens a new O_RDONLY file description of fd (via /proc/self/fd). */
int theus__os_reopen_ro(int fd, int *ro_fd);
/* Maps the whole of fd, shared; PROT_READ only unless writable. */
int theus__os_map(int fd, uint64_t size, int writable, void **base);
void theus__os_unmap(void *base, uint64_t size);
/* Size of the file behind fd. */
int theus__os_fd_size(int fd, uint64_t *size);
/* Allocates backing pages for [off, off+len) now (no SIGBUS later). */
int theus__os_reserve(int fd, uint64_t off, uint64_t len);
/* Returns the pages of [off, off+len) to the system (reads then give zeros). */
int theus__os_release(int fd, uint64_t off, uint64_t len);
/* The system page size. */
size_t theus__os_page_size(void);

#endif
