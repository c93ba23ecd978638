namespace IlgpuLlama.Kernels;

/// <summary>16-bit storage type of weights on the device.</summary>
public enum WeightStorage
{
    /// <summary>IEEE binary16: the default, and the only choice that a P100 computes with natively.</summary>
    Fp16,

    /// <summary>bfloat16, kept exactly as Llama checkpoints store it.</summary>
    Bf16,
}
