using ILGPU.Runtime;
using ILGPU;

namespace IlgpuLlama.Device;

/// <summary>What a device buffer holds; the memory report totals by category.</summary>
public enum MemoryCategory
{
    /// <summary>Model parameters (16-bit).</summary>
    Weights,

    /// <summary>The preallocated fp16 key/value cache.</summary>
    KvCache,

    /// <summary>The activation workspace of the forward pass (fp32) and its small index buffers.</summary>
    Activations,

    /// <summary>Anything else (benchmarks, tests).</summary>
    Other,
}
