/* dist internals shared by the files of src/dist (not a public API). */
#ifndef LOSA_DIST_INTERNAL_H
#define LOSA_DIST_INTERNAL_H

#include "dist.h"

#include <mpi.h>

/* The communicator of this rank's stage (its DP replicas; rank == replica). */
MPI_Comm dist_comm_stage(const dist_ctx *d);

#endif
