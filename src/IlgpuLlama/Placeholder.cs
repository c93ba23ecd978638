namespace IlgpuLlama; public static class Placeholder {}
