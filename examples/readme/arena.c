/* README example 4: the arena on its own. A forked child attaches the arena
 * read-only and checks it sees the parent's data. Exit status 0 on success. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <theus/theus.h>

int main(void) {
  /* readme:begin arena */
  theus_arena *a;
  if (theus_arena_open(NULL, &a) != 0) {           /* budget: half the memory available */
    fprintf(stderr, "%s\n", a ? theus_arena_errmsg(a) : "out of memory");
    theus_arena_close(a);
    return 1;
  }
  uint64_t shape[2] = {1024, 1024};
  float *x;
  theus_handle h;
  if (theus_array_alloc(a, THEUS_DTYPE_F32, 2, shape, &h, (void **)&x) != 0) {
    fprintf(stderr, "%s\n", theus_arena_errmsg(a));  /* what failed and how to fix it */
    return 1;
  }
  x[0] = 42.0f;
  pid_t pid = fork();
  if (pid == 0) {                                  /* any process holding the ro fd */
    theus_arena *ro;
    theus_array_info info;
    if (theus_arena_open_ro(theus_arena_ro_fd(a), &ro) || theus_array_info_get(ro, h, &info))
      _exit(2);
    _exit(((const float *)info.data)[0] == 42.0f ? 0 : 1);  /* a store here: SIGSEGV */
  }
  int st = 0;
  waitpid(pid, &st, 0);
  theus_arena_free(a, h);                          /* pages go back to the system */
  theus_arena_close(a);
  /* readme:end arena */
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
