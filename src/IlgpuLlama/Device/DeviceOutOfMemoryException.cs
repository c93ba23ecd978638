using ILGPU.Runtime;
using ILGPU;

namespace IlgpuLlama.Device;

/// <summary>The device could not hold what was asked of it; the message says how much and what to change.</summary>
public sealed class DeviceOutOfMemoryException(string message, Exception? inner = null) : Exception(message, inner);
