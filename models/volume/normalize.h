// Intensity normalisation of a multi-modal volume, the step between reading a case and the
// networks. Which normalisation a bundle was trained with is its config's business: the engine
// (models/engine/preprocess.h) reads the bundle's `preprocessing` block and calls one of these.
//
// Thread safety: pure functions of their argument (each call runs one thread per channel).
#ifndef DANET_MODELS_VOLUME_NORMALIZE_H_
#define DANET_MODELS_VOLUME_NORMALIZE_H_

#include "models/volume/brats.h"

namespace danet::volume {

// z-scores each channel over brain voxels (those where the channel sum is > 0); voxels outside
// the brain are set to 0. A channel that is constant over the brain becomes 0 there. The result
// does not depend on the channel order.
void NormalizeZScoreBrain(MultiModalVolume* volume);

}  // namespace danet::volume

#endif  // DANET_MODELS_VOLUME_NORMALIZE_H_
