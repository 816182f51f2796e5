/* Error code names, shared by every layer. */
#include "theus/error.h"

const char *theus_strerror(int code) {
  switch (code) {
    case 0: return "success";
#define THEUS__ERR_TEXT(name, value, text) \
  case THEUS_##name: return text;
    THEUS_ERRNO_MAP(THEUS__ERR_TEXT)
#undef THEUS__ERR_TEXT
  }
  return "unknown error";
}

const char *theus_err_name(int code) {
  switch (code) {
    case 0: return "THEUS_OK";
#define THEUS__ERR_NAME(name, value, text) \
  case THEUS_##name: return "THEUS_" #name;
    THEUS_ERRNO_MAP(THEUS__ERR_NAME)
#undef THEUS__ERR_NAME
  }
  return "THEUS_E?";
}
