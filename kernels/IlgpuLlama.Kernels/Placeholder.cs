namespace IlgpuLlama.Kernels; public static class Placeholder {}
