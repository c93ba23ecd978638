namespace IlgpuLlama.Device;

/// <summary>The device could not hold what was asked of it; the message says how much and what to change.</summary>
public sealed class DeviceOutOfMemoryException : Exception, IEngineMessage
{
    /// <summary>Creates the exception from a message with <see cref="EngineParameters"/> placeholders.</summary>
    public DeviceOutOfMemoryException(string template, Exception? inner = null)
        : base(EngineParameters.Render(template, EngineParameters.LibraryName), inner) => Template = template;

    /// <inheritdoc/>
    public string Template { get; }

    /// <inheritdoc/>
    public EngineParameter? Parameter => null;
}
