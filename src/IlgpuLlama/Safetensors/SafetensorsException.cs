namespace IlgpuLlama.Safetensors;

/// <summary>
/// A safetensors file or model directory is missing, malformed or inconsistent.
/// The message is a single line that names the file (and tensor, where there is one),
/// says what is wrong and, where there is one, how to fix it.
/// </summary>
public sealed class SafetensorsException : Exception
{
    /// <summary>Creates the exception with a one-line message.</summary>
    public SafetensorsException(string message) : base(message) { }

    /// <summary>Creates the exception with a one-line message and the low-level cause.</summary>
    public SafetensorsException(string message, Exception innerException) : base(message, innerException) { }
}
