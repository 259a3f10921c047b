import numpy as np
import numpy.typing as npt

def parse(data: bytes | memoryview, out: npt.NDArray[np.int64], /) -> int: ...
