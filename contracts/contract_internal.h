/* contracts: internal helpers shared by the contracts' files (not installed,
 * never included from another folder). */
#ifndef THEUS_CONTRACT_INTERNAL_H
#define THEUS_CONTRACT_INTERNAL_H

#include "base.h" /* theus__errf */
#include "theus/contract.h"


#endif
