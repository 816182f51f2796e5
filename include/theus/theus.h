/* theus-c — umbrella header: everything a process author or host needs. */
#ifndef THEUS_THEUS_H
#define THEUS_THEUS_H

#include "error.h"
#include "version.h"
#include "heavy.h"
#include "pool.h"
#include "contract.h"
#include "engine.h"
#include "twin.h"
#include "pipeline.h"

#endif /* THEUS_THEUS_H */
