from .heads import LinearDepthHead, LinearSegHead
from .losses import DepthGradientLoss
from .segmentors import DepthEncoderDecoder
