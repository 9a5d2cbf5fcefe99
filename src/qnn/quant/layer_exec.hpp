// LayerExec and layer_exec() are part of the precision vocabulary: see precision.hpp.
#pragma once
#include "qnn/quant/precision.hpp"
