namespace IlgpuLlama.Model;

/// <summary>
/// The "rope_scaling" block of a Llama 3.1+ config. Only the "llama3" type exists here because it is
/// the only scaling those models use; configs asking for another type are rejected when read.
/// </summary>
/// <param name="RopeType">Always "llama3".</param>
/// <param name="Factor">How much the lowest frequencies are slowed down (32 for Llama 3.2, 8 for 3.1).</param>
/// <param name="LowFreqFactor">original_max_position_embeddings / this = the wavelength above which frequencies are fully scaled.</param>
/// <param name="HighFreqFactor">original_max_position_embeddings / this = the wavelength below which frequencies are untouched.</param>
/// <param name="OriginalMaxPositionEmbeddings">The pre-training context length the thresholds are relative to.</param>
public sealed record RopeScaling(string RopeType, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings);
