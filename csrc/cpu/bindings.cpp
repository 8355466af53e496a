// Python bindings of the CPU extension: forward and backward as declared in gspn2_common.h.
#include "cpu/propagate_cpu.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "GSPN-2 line-scan propagation, CPU kernels";
  m.def("forward", &gspn2::cpu::propagate_forward, "GSPN-2 propagation forward (CPU)",
        py::arg("x"), py::arg("gates"), py::arg("lam"), py::arg("u"), py::arg("directions"),
        py::arg("chunk"), py::arg("normalize"), py::arg("merge"), py::arg("save_hidden"));
  m.def("backward", &gspn2::cpu::propagate_backward, "GSPN-2 propagation backward (CPU)",
        py::arg("grad_out"), py::arg("x"), py::arg("gates"), py::arg("lam"), py::arg("u"),
        py::arg("hidden"), py::arg("directions"), py::arg("chunk"), py::arg("normalize"),
        py::arg("merge"));
  m.def("kernel_isa", &gspn2::cpu::kernel_isa,
        "instruction set of the hot loops on this CPU: 'x86-64-v3' or 'baseline'");
}
